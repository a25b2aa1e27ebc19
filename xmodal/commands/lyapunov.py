"""``xmodal lyapunov``: Lyapunov spectrum of a test system or of a surrogate parameter point."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from xmodal.arguments import (
    add_seed,
    finite_float,
    float_list,
    nonnegative_int,
    positive_float,
    positive_int,
    sizes_list,
)
from xmodal.report import (
    check_figure_format,
    check_memory,
    check_out_file,
    check_steps,
    dumps_json,
)

#: Published values at the default parameters (Sprott, "Chaos and Time-Series Analysis", 2003).
REFERENCE = {
    "lorenz": {"exponents": [0.9056, 0.0, -14.5723], "kaplan_yorke": 2.062},
    "rossler": {"exponents": [0.0714, 0.0, -5.3943], "kaplan_yorke": 2.0132},
    "henon": {"exponents": [0.4192, -1.6232], "kaplan_yorke": 1.2583},
}
#: Default lengths: long enough for the published accuracy (lambda_1 within ~0.005 in float64).
DEFAULTS = {  # system: (dt, measured steps, transient steps, renorm_every)
    "lorenz": (0.01, 1_000_000, 1000, 1),
    "rossler": (0.01, 1_000_000, 5000, 1),
    "henon": (1.0, 1_000_000, 1000, 1),
    "surrogate": (0.01, 10_000, 2000, 1),
}
TITLES = {
    "lorenz": "Lorenz-63",
    "rossler": "Roessler",
    "henon": "Henon map",
    "surrogate": "surrogate",
}


def param_setting(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), finite_float(value)


HELP = "Lyapunov spectrum (Benettin/QR) of a test system or a surrogate point"
DESCRIPTION = (
    "Lyapunov spectrum by Benettin's QR method on the tangent dynamics (RK4). Test systems "
    "(lorenz, rossler, henon) default to float64 and a length long enough for the published "
    "values; 'surrogate' gives the conditional exponents of the paper preset at (beta_self, "
    "beta_cross), driven by the Lorenz x(t), y(t) (--drive), transverse to the neutral global "
    "phase shift.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system", choices=["lorenz", "rossler", "henon", "surrogate"],
                   default="lorenz", help="the system (default lorenz)")
    p.add_argument("--dt", type=positive_float, help="RK4 step (flows; default 0.01)")
    p.add_argument("--steps", type=positive_int, help="measured steps (default per system)")
    p.add_argument("--transient", type=nonnegative_int, help="discarded steps (default per system)")
    p.add_argument("--k", type=positive_int, help="number of exponents (default all; surrogate 4)")
    p.add_argument("--renorm-every", type=positive_int, help="steps between QR (default 1)")
    p.add_argument("--y0", type=float_list, help="initial state, comma-separated (test systems)")
    p.add_argument("--param", type=param_setting, action="append", default=[],
                   metavar="NAME=VALUE", help="system parameter, e.g. rho=28 (repeatable)")
    p.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    g = p.add_argument_group("surrogate")
    g.add_argument("--beta-self", type=finite_float, default=1.0, help="beta_self (= kappa_self)")
    g.add_argument("--beta-cross", type=finite_float, default=0.1,
                   help="beta_cross (= kappa_cross)")
    g.add_argument("--sizes", type=sizes_list, default=(50, 50), help="oscillators per modality")
    g.add_argument("--degree", type=positive_int, default=10,
                   help="Watts-Strogatz degree inside each modality (even, < size)")
    g.add_argument("--omega-spread", type=finite_float, default=1.0, help="std of omega (rad/time)")
    g.add_argument("--drive", choices=["lorenz", "none"], default="lorenz",
                   help="drive u(t): standardised Lorenz x -> modality 0, y -> modality 1")
    g.add_argument("--with-phase-shift", action="store_true",
                   help="keep the neutral global phase-shift exponent (0) in the spectrum")
    g.add_argument("--field", choices=["reference", "dense", "sparse", "auto"],
                   default="reference", help="evaluation of the surrogate's vector field")
    add_seed(g)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", type=Path, metavar="FILE", help="write a convergence plot (PNG)")


def _system(args, jnp, dtype):
    """(title, dynamics, function, params, y0, exact sum or None, reference or None)."""
    from lorenz.systems import SYSTEMS

    dynamics, fn, params, y0, _ = SYSTEMS[args.system]
    names = list(params.__dataclass_fields__)
    for name, value in args.param:
        if name not in names:
            raise ValueError(f"--param {name}: {args.system} has parameters {', '.join(names)}")
        params = params.replace(**{name: value})
    y0 = args.y0 if args.y0 is not None else y0
    if len(y0) != len(SYSTEMS[args.system][3]):
        raise ValueError(f"--y0: {args.system} needs {len(SYSTEMS[args.system][3])} values, "
                         f"got {len(y0)}")
    p = params
    exact_sum = {
        "lorenz": lambda: -(p.sigma + 1 + p.beta),
        "rossler": lambda: None,  # divergence a + x - c is not constant
        "henon": lambda: math.log(abs(p.b)),
    }[args.system]()
    reference = REFERENCE[args.system] if not args.param else None
    return dynamics, fn, params, jnp.asarray(y0, dtype), exact_sum, reference


def _lorenz_drive(dtype, dt, n_steps):
    """Standardised Lorenz x(t), y(t) on [0, (n_steps + 1) dt] (after 20 time units of
    transient): the drive of sweep specs."""
    from lorenz.data import lorenz_xy
    from surrogate.sweeping import standardised_drive

    return standardised_drive(lorenz_xy(n_steps + 2, dt, dtype), dt)


def run(args: argparse.Namespace) -> int:
    if args.plot is not None:
        check_out_file(args.plot, "--plot")
        check_figure_format(args.plot, "--plot")
    dt0, steps0, transient0, renorm0 = DEFAULTS[args.system]
    dt = dt0 if args.dt is None else args.dt
    if args.system == "henon" and args.dt is not None:
        raise ValueError("--dt: the Henon map has no time step")
    n_steps = steps0 if args.steps is None else args.steps
    transient = transient0 if args.transient is None else args.transient
    renorm = renorm0 if args.renorm_every is None else args.renorm_every
    if n_steps % renorm:
        raise ValueError(f"--steps {n_steps} must be a multiple of --renorm-every {renorm}")
    if args.float32:  # the loops' block counters are int32 without x64
        check_steps(n_steps + transient, "--steps + --transient (with --float32)")
    if args.system == "surrogate":  # dense couplings and the tangent frame, float64
        n = sum(args.sizes)
        if args.degree % 2 or args.degree >= min(args.sizes):
            raise ValueError(f"--degree {args.degree}: the Watts-Strogatz degree must be even "
                             f"and smaller than every --sizes entry "
                             f"({','.join(map(str, args.sizes))})")
        check_memory(8 * 8 * n * n, f"--sizes {','.join(map(str, args.sizes))} ({n} oscillators)")
    if args.system == "surrogate" and args.drive == "lorenz":  # the drive is tabulated
        check_memory(48 * (n_steps + transient), f"--steps + --transient = "
                     f"{n_steps + transient:.4g} with --drive lorenz (a tabulated drive)")

    print(f"lyapunov: {args.system}, {n_steps + transient:.4g} steps (transient {transient}); "
          f"compiling, then running (progress on stderr every 30 s)", file=sys.stderr,
          flush=True)
    import jax

    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from surrogate.lyapunov import (
        conditional_lyapunov_exponents,
        kaplan_yorke_dimension,
    )
    from surrogate.lyapunov_batch import lyapunov_spectrum_batch, lyapunov_spectrum_map_batch

    dtype = jnp.float32 if args.float32 else jnp.float64
    settings = {
        "n_steps": n_steps, "transient": transient, "renorm_every": renorm, "n_records": 200
    }
    info: dict = {}
    t_start = time.perf_counter()
    if args.system == "surrogate":
        if args.param or args.y0 is not None:
            raise ValueError("--param/--y0 apply to the test systems; use --beta-self etc.")
        import surrogate as sg

        k_model, k_theta = jax.random.split(jax.random.key(args.seed))
        drive = None
        if args.drive == "lorenz":
            drive = _lorenz_drive(dtype, dt, transient + n_steps)
        sur = sg.paper_preset(k_model, args.beta_self, args.beta_cross, sizes=args.sizes,
                              k=args.degree, omega_spread=args.omega_spread, drive=drive,
                              dtype=dtype)
        n = sur.network.n
        modulo = not args.with_phase_shift
        k = args.k if args.k is not None else min(4, n - 1 if modulo else n)
        if k > (n - 1 if modulo else n):
            raise ValueError(f"--k {k}: at most {n - 1 if modulo else n} exponents for N={n}")
        theta0 = sg.initial_phases(k_theta, n, dtype)
        def compute(**s):
            return conditional_lyapunov_exponents(sur, theta0, dt=dt, k=k, field=args.field,
                                                  modulo_phase_shift=modulo, **s)
        exact_sum, reference = None, None
        title = (f"surrogate {'x'.join(map(str, args.sizes))}, beta_self={args.beta_self:g}, "
                 f"beta_cross={args.beta_cross:g}, drive={args.drive}, "
                 f"{'transverse to the phase shift' if modulo else 'with the phase shift'}")
        info = {"beta_self": args.beta_self, "beta_cross": args.beta_cross,
                "sizes": list(args.sizes), "drive": args.drive, "modulo_phase_shift": modulo,
                "field": args.field}
    else:
        dynamics, fn, params, y0, exact_sum, reference = _system(args, jnp, dtype)
        n = y0.shape[0]
        k = n if args.k is None else args.k
        if k > n:
            raise ValueError(f"--k {k}: {args.system} has dimension {n}")
        def compute(**s):  # the batch engine, one trajectory
            if dynamics == "map":
                res = lyapunov_spectrum_map_batch(fn, y0[None], params, k=k, **s)
            else:
                res = lyapunov_spectrum_batch(fn, y0[None], params, dt=dt, k=k, **s)
            return jax.tree.map(lambda a: a[0], res)
        title = TITLES[args.system] + " (" + ", ".join(
            f"{f}={getattr(params, f):g}" for f in params.__dataclass_fields__) + ")"
        info = {"parameters": {f: float(getattr(params, f)) for f in params.__dataclass_fields__},
                "y0": np.asarray(y0).tolist()}
        if k < n:
            exact_sum = None
        if reference is not None and k < n:
            reference = {"exponents": reference["exponents"][:k]}
    calibration_s = 0.0
    eta = None
    if n_steps + transient > 5 * (steps0 + transient0):  # long: estimate, then show progress
        t_cal = time.perf_counter()
        eta = _estimate(jax, compute, n_steps + transient, renorm, steps0 // 10)
        calibration_s = time.perf_counter() - t_cal
    with _Heartbeat(eta, quiet=False):
        res = compute(**settings)
        lam = np.asarray(jax.block_until_ready(res.exponents), dtype=np.float64)
    seconds = time.perf_counter() - t_start - calibration_s
    d_ky = float(kaplan_yorke_dimension(jnp.asarray(lam)))
    is_map = args.system == "henon"
    result = {
        "system": args.system,
        "exponents": lam.tolist(),
        "kaplan_yorke": d_ky,
        "sum": float(lam.sum()),
        "exact_sum": exact_sum,
        "reference": reference,
        "units": "per iteration" if is_map else "per unit time",
        "dt": None if is_map else dt,
        "n_steps": n_steps,
        "transient": transient,
        "renorm_every": renorm,
        "horizon": float(res.times[-1]),
        "dtype": "float32" if args.float32 else "float64",
        "seconds": seconds,
        **info,
    }
    if args.plot is not None:
        _plot(args.plot, np.asarray(res.times), np.asarray(res.running), result, title)
        result["plot"] = str(args.plot)
    if args.json:
        print(dumps_json(result, "lyapunov --json"))
    else:
        _table(result, title)
    return 0


def _estimate(jax, compute, total: int, renorm: int, probe: int) -> float:
    """Seconds the run of ``total`` steps will take, from a timed short run (after its
    compile); said on stderr."""
    probe = renorm * max(1, probe // renorm)
    short = {"n_steps": probe, "transient": 0, "renorm_every": renorm, "n_records": 1}
    jax.block_until_ready(compute(**short).exponents)  # compile
    t0 = time.perf_counter()
    jax.block_until_ready(compute(**short).exponents)
    rate = probe / max(time.perf_counter() - t0, 1e-9)
    eta = total / rate
    print(f"lyapunov: {total:.4g} steps at about {rate:.3g} steps/s (timed on {probe}): "
          f"about {_duration(eta)}", file=sys.stderr, flush=True)
    return eta


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


class _Heartbeat:
    """While the compiled run blocks the main thread: elapsed time on stderr every 30 s, or,
    with an estimate ``eta``, against it after 10 s and then every 2 % of it (10 to 30 s
    apart)."""

    def __init__(self, eta: float | None, quiet: bool):
        import threading

        self.eta, self.stop = eta, threading.Event()
        self.thread = None if quiet else threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        t0 = time.perf_counter()
        every = 30.0 if self.eta is None else min(max(self.eta / 50, 10.0), 30.0)
        wait = 30.0 if self.eta is None else 10.0  # the first after 10 s with an estimate
        while not self.stop.wait(wait):
            wait = every
            el = time.perf_counter() - t0
            if self.eta is None:
                print(f"lyapunov: running for {_duration(el)}", file=sys.stderr, flush=True)
                continue
            print(f"lyapunov: {_duration(el)} of about {_duration(self.eta)} "
                  f"(~{min(99, 100 * el / self.eta):.0f} %, estimated)", file=sys.stderr,
                  flush=True)

    def __enter__(self):
        if self.thread is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        return False


def _table(result, title) -> None:
    ref = (result["reference"] or {}).get("exponents")
    steps = (f"{result['n_steps']} iterations" if result["dt"] is None else
             f"RK4 dt={result['dt']:g}, {result['n_steps']} steps (T={result['horizon']:g})")
    print(f"{title}")
    print(f"{steps}, transient {result['transient']}, QR every {result['renorm_every']}, "
          f"{result['dtype']}, {result['seconds']:.2f} s")
    print(f"{'i':>3} {'lambda_i':>12} {'published':>10} {'diff':>9}")
    for i, v in enumerate(result["exponents"]):
        if ref is not None:
            print(f"{i + 1:>3} {v:12.5f} {ref[i]:10.4f} {v - ref[i]:+9.5f}")
        else:
            print(f"{i + 1:>3} {v:12.5f}")
    exact = result["exact_sum"]
    tail = f"   (exact {exact:.5f}, diff {result['sum'] - exact:+.2e})" if exact is not None else ""
    print(f"sum {result['sum']:.5f}{tail}")
    ky = (result["reference"] or {}).get("kaplan_yorke")
    print(f"Kaplan-Yorke dimension {result['kaplan_yorke']:.4f}"
          + (f"   (published {ky})" if ky is not None else ""))
    print(f"units: {result['units']}")
    if "plot" in result:
        print(f"wrote {result['plot']}")


def _plot(path, times, running, result, title) -> None:
    from matplotlib.figure import Figure

    from xmodal.report import atomic_savefig

    ref = (result["reference"] or {}).get("exponents")
    k = running.shape[1]
    fig = Figure(figsize=(7, 1.7 * k + 0.8), layout="constrained")
    axes = fig.subplots(k, 1, sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(times, running[:, i], lw=1.2, label="running estimate")
        if ref is not None:
            ax.axhline(ref[i], color="k", ls="--", lw=0.8, label="published")
        ax.set_ylabel(f"lambda_{i + 1}")
        ax.set_xscale("log")
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("iterations" if result["dt"] is None else "time")
    fig.suptitle(f"Lyapunov exponents: {title}", fontsize=9)
    atomic_savefig(fig, path)
