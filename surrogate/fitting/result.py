"""``FitResult``, the outcome of a fit, and its JSON form (``params.json``): written by
``FitResult.to_json`` and read back, with the fitted surrogate rebuilt, by ``model_from_json``.
The file format is described in docs/fit.md.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from surrogate.fitting.config import FitConfig
from surrogate.fitting.intervals import Intervals
from surrogate.fitting.model import FitModel, FitParams, RawParams, fit_keys, make_model
from surrogate.fitting.target import Target

__all__ = ["FORMAT", "FitResult", "model_from_json"]

#: The ``format`` field of a params.json file.
FORMAT = "xmodal-fit"
#: Version 2: the anchored ensemble model (anchor, encoding_scale, realizations) and intervals.
FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    """Outcome of ``fit`` (host arrays). ``params``: best fit; ``restart_params``: FitParams with a
    leading restart axis; ``curves`` (R, steps) loss per step (NaN after a restart stopped);
    ``layer_residual`` (L,); ``model_mass`` (L, M, M); Hessian of the loss in the raw
    coordinates named ``param_names``: ``hessian_eigvals`` ascending, ``hessian_eigvecs`` columns;
    ``spread``: std over converged restarts per parameter name; ``unidentified``: parameter
    names mostly inside the sloppy subspace; ``sloppy_directions``: readable sloppy eigenvectors."""

    config: FitConfig
    seed: int
    key_data: tuple[int, ...]
    sizes: tuple[int, ...]
    target: Target
    params: FitParams
    raw: RawParams
    restart_params: FitParams
    restart_loss: np.ndarray
    curves: np.ndarray
    steps_run: int
    best_restart: int
    loss: float
    layer_residual: np.ndarray
    model_mass: np.ndarray
    param_names: tuple[str, ...]
    hessian_eigvals: np.ndarray
    hessian_eigvecs: np.ndarray
    converged: np.ndarray
    spread: dict
    unidentified: tuple[str, ...]
    sloppy_directions: tuple[str, ...]
    intervals: Intervals | None
    seconds: float

    def to_json(self) -> dict:
        """A JSON-able description: enough to rebuild the surrogate (``model_from_json``)."""
        c, p = self.config, self.params
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "seed": self.seed,
            "key": list(self.key_data),
            "modalities": list(self.target.modalities),
            "sources": list(self.target.sources),
            "surrogate": {"sizes": list(self.sizes), "k": c.k, "p": c.p,
                          "cross_density": c.cross_density, "normalisation": c.normalisation,
                          "n_initial": c.n_initial, "horizon": c.horizon, "dt": c.dt,
                          "anchored": c.anchored, "encoding_scale": c.encoding_scale,
                          "realizations": c.realizations,
                          "drive": "constant unit drive per modality"},
            "params": {"B": np.asarray(p.B).tolist(), "K": np.asarray(p.K).tolist(),
                       "omega_spread": float(p.omega_spread),
                       "gain": np.asarray(p.gain).tolist(),
                       "anchor": float(p.anchor),
                       "times": np.asarray(p.times).tolist()},
            "intervals": None if self.intervals is None else self.intervals.to_json(),
            "interval_method": None if self.intervals is None else self._interval_method(),
            # a spread needs two converged restarts: null then, with the reason (not a NaN)
            "uncertainty": {"restart_std": self.spread if self.converged.sum() > 1 else None,
                            **({} if self.converged.sum() > 1 else
                               {"restart_std_note": "needs >= 2 converged restarts"}),
                            "converged_restarts": int(self.converged.sum()),
                            "restarts": int(self.converged.size)},
            "identifiability": {"unidentified": list(self.unidentified),
                                "sloppy_directions": list(self.sloppy_directions),
                                "hessian_eigenvalues": np.asarray(self.hessian_eigvals).tolist(),
                                "sloppy_ratio": c.sloppy_ratio},
            "noise": None if self.intervals is None else {
                "realization_sd": np.asarray(self.intervals.noise_sd).tolist(),
                "fisher_sd": dict(zip(self.param_names, _nulls(self.intervals.fisher_sd),
                                      strict=False))},
            "loss": self.loss,
            "divergence": c.divergence,
            "layer_residual": np.asarray(self.layer_residual).tolist(),
            "steps_run": self.steps_run,
            "seconds": self.seconds,
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in dataclasses.asdict(c).items()},
        }


    def _interval_method(self) -> dict:
        iv = self.intervals
        pr = iv.profiles
        profiles = {}
        for c, name in enumerate(iv.profiled):
            profiles[name] = {side: {"offset": _nulls(pr.offsets[c, s]),
                                     "deviance": _nulls(pr.deviance[c, s] - pr.minimum)}
                              for s, side in enumerate(("down", "up"))}
        return {"method": "couplings: profile likelihood under the realization noise "
                          "(Gaussian deviance of the free shares projected on the principal "
                          "directions of their noise at the fit, with the covariance of "
                          "held-out realizations at each point, x (1 + 1/R)), raw "
                          "coordinates (logs) within 1e-4 .. 1e2; spread, gains, anchor: "
                          "linearised, +- sqrt(threshold) x their sd under the same noise",
                "simultaneous": iv.simultaneous, "threshold": iv.threshold,
                "held_out": iv.draws, "noise_directions": int(iv.basis.shape[1]),
                "profile_steps": self.config.profile_steps,
                "minimum_deviance": pr.minimum,
                "misfit": {"value": _nulls(pr.misfit)[0], "dof": pr.dof,
                           "p": _nulls(pr.misfit_p)[0]},
                "profiles": profiles}


def _nulls(x) -> list:
    """A list with None where ``x`` is not finite (strict JSON)."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, np.float64).ravel()]


def model_from_json(obj: dict, source: str = "<params>", dtype=None
                    ) -> tuple[FitModel, FitParams]:
    """Rebuild the fitted model and parameters from ``FitResult.to_json()`` output (in ``dtype``,
    default JAX's float); ValueError naming ``source`` and the field if it does not parse."""
    try:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise KeyError("format")
        s, p = obj["surrogate"], obj["params"]
        if not isinstance(s, dict) or not isinstance(p, dict):
            raise KeyError("surrogate" if not isinstance(s, dict) else "params")
        sizes = s["sizes"]
        if not isinstance(sizes, list) or len(sizes) < 2 or not all(
                _is_int(v) and 1 <= v <= 10**6 for v in sizes):
            raise ValueError(f"field 'surrogate.sizes': must be >= 2 integers in 1 .. 10**6, "
                             f"got {sizes!r}")
        modalities = obj["modalities"]
        if not isinstance(modalities, list) or len(modalities) != len(sizes) or not all(
                isinstance(m, str) for m in modalities):
            raise ValueError(f"field 'modalities': must be {len(sizes)} names (one per "
                             f"'surrogate.sizes' entry), got {modalities!r}")
        ints = {name: _integer(s, name, 0 if name == "k" else 1) for name in ("k", "n_initial")}
        reals = {name: _finite(s, name) for name in ("p", "cross_density", "horizon", "dt")}
        if not isinstance(s["normalisation"], str):
            raise ValueError(f"field 'surrogate.normalisation': must be a string, "
                             f"got {s['normalisation']!r}")
        version = obj.get("format_version", 1)
        if not _is_int(version) or version not in (1, 2):
            raise ValueError(f"field 'format_version': must be 1 or 2, got {version!r}")
        # version 1: the unanchored model of one realization (rebuilt with today's draws)
        anchored = s["anchored"] if version >= 2 else False
        if not isinstance(anchored, bool):
            raise ValueError(f"field 'surrogate.anchored': must be true or false, "
                             f"got {anchored!r}")
        realizations = _integer(s, "realizations", 1) if version >= 2 else 1
        encoding_scale = _finite(s, "encoding_scale") if "encoding_scale" in s else np.pi / 2
        try:
            config = FitConfig(modalities=tuple(modalities), sizes=tuple(sizes), k=ints["k"],
                               p=reals["p"], cross_density=reals["cross_density"],
                               normalisation=s["normalisation"], n_initial=ints["n_initial"],
                               horizon=reals["horizon"], dt=reals["dt"], anchored=anchored,
                               encoding_scale=encoding_scale, realizations=realizations)
        except ValueError as err:
            raise ValueError(f"fields 'surrogate.*' do not describe a model ({err})") from None
        if "key" in obj:
            data = obj["key"]
            if not isinstance(data, list) or not data or not all(
                    _is_int(v) and 0 <= v < 2**32 for v in data):
                raise ValueError(f"field 'key': must be a list of integers in 0 .. 2**32 - 1 "
                                 f"(the data of a PRNG key), got {data!r}")
            try:
                key = jax.random.wrap_key_data(np.asarray(data, np.uint32))
            except (TypeError, ValueError) as err:
                raise ValueError(f"field 'key': not the data of a PRNG key ({err})") from None
        else:
            seed = obj["seed"]
            if not _is_int(seed) or not -(2**63) <= seed < 2**63:
                raise ValueError(f"field 'seed': must be an integer in -2**63 .. 2**63 - 1, "
                                 f"got {seed!r}")
            key = jax.random.key(seed)
        dtype = jnp.result_type(float) if dtype is None else dtype
        arr = lambda name, shape: _field_array(p, name, shape, dtype, source)  # noqa: E731
        m = len(config.sizes)
        times = p["times"]
        anchor = arr("anchor", ()) if version >= 2 else jnp.zeros((), dtype)
        params = FitParams(B=arr("B", (m, m)), K=arr("K", (m, m)),
                           omega_spread=arr("omega_spread", ()), gain=arr("gain", (m,)),
                           anchor=anchor,
                           times=arr("times", (len(times) if isinstance(times, list) else 0,)))
    except KeyError as err:
        raise ValueError(f"{source}: field {err.args[0]!r} missing or wrong (not an xmodal fit "
                         f"parameters file)") from None
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{source}: {err}") from None
    return make_model(fit_keys(key)[0], config.sizes, config, dtype), params


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _integer(table, name, low):
    v = table[name]
    if not _is_int(v) or not low <= v < 2**31:
        raise ValueError(f"field 'surrogate.{name}': must be an integer in {low} .. 2**31 - 1, "
                         f"got {v!r}")
    return v


def _finite(table, name):
    v = table[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(float(v)):
        raise ValueError(f"field 'surrogate.{name}': must be a finite number, got {v!r}")
    return float(v)


def _field_array(p, name, shape, dtype, source):
    try:
        a = np.asarray(p[name], float)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"field 'params.{name}': not numeric (numbers of shape {shape} "
                         f"expected)") from None
    if a.shape != shape:
        raise ValueError(f"field 'params.{name}': expected shape {shape}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"field 'params.{name}': holds non-finite values (NaN or infinity); "
                         f"finite numbers expected")
    return jnp.asarray(a, dtype)
