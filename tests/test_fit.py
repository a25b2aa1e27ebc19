"""surrogate.fit: targets from bundles (read by mllm_probe.bundle), round-trip recovery of the
anchored ensemble model through the real bundle format, intervals from held-out realizations,
identifiability report, params.json (versions 1 and 2), and `xmodal fit` / `xmodal
sensitivity` end to end on a bundle captured from a tiny Qwen2.5-Omni thinker by the probe."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_files import run_cli

import surrogate as sg
from mllm_probe.bundle import (
    block_shares,
    load_block_shares,
    load_bundle,
    save_bundle,
    shares_bundle,
)
from surrogate import fitting as sf
from surrogate.fitting.model import POSITIVE_BOX, fit_keys

L = 8
#: Small, informative synthetic setting (fast on 2 CPU cores): the anchored model (h = 4),
#: 2 realizations, no intervals. Shared by the fits below so that they reuse one compilation.
CONFIG = sf.FitConfig(sizes=(10, 10), k=4, cross_density=0.3, horizon=3.0, dt=0.1, n_initial=1,
                      realizations=2, restarts=2, steps=60, patience=30, tol=1e-3,
                      polish_steps=12, init_spread=0.2, fit_spread=False, fit_gain=False,
                      held_out=0)


def target_of(bundle, source="<in memory>", **kw):
    s = block_shares(bundle, source=source, **kw)
    return sf.make_target(s.shares, s.weight, s.modalities, s.token_counts, (s.source,))


def ensemble_bundle(key, params, config):
    """The fit's own ensemble (the model fit(.., key, config) builds) at ``params``, as a
    bundle: a well-posed round trip."""
    model = sf.make_model(fit_keys(key)[0], config.sizes, config)
    shares = np.asarray(sf.model_attention(model, params), np.float64)
    return shares_bundle(shares, config.modalities, config.sizes)
#: Relative tolerance of the recovered couplings, as README claims (measured with these settings:
#: 1.7e-6, 3.0e-7 and 1.1e-8 for seeds 0, 1, 2).
RECOVERY_RTOL = 1e-5


def truth(B, K=None, spread=0.2, gain=(0.0, 0.0), anchor=4.0):
    B = jnp.asarray(B, jnp.float64)
    return sf.FitParams(B=B, K=B if K is None else jnp.asarray(K, jnp.float64),
                        omega_spread=jnp.asarray(spread, jnp.float64),
                        gain=jnp.asarray(gain, jnp.float64), anchor=jnp.asarray(anchor),
                        times=sf.layer_times(jnp.zeros((0,)), L, CONFIG.horizon, jnp.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_recovers_B_and_K(seed, tmp_path):
    """Tied couplings (K = B, the paper preset), anchored model: the mean attention of the fit's
    own ensemble of realizations, saved and read back in the real bundle format, is fitted back
    to within RECOVERY_RTOL from random starts (the optimiser and the format, not
    identifiability: the model's realizations are the data's)."""
    config = CONFIG.replace(coupling=sg.Tied())
    B = np.asarray(jax.random.uniform(jax.random.key(100 + seed), (2, 2), minval=0.5, maxval=2.5))
    key = jax.random.key(seed)
    path = tmp_path / "synthetic.bundle"
    save_bundle(path, ensemble_bundle(key, truth(B), config))
    bundle = load_bundle(path)
    assert bundle.modalities == ("text", "audio", "vision", "special")
    assert sg.fit is sf.fit  # the top-level name is the function
    s = load_block_shares(path)
    result = sf.fit(sf.make_target(s.shares, s.weight, s.modalities, s.token_counts), key,
                    config)
    assert result.loss < 1e-8
    np.testing.assert_allclose(result.params.B, B, rtol=RECOVERY_RTOL)
    np.testing.assert_allclose(result.params.K, B, rtol=RECOVERY_RTOL)
    # the polish only improves on the best Adam iterate, and the per-layer residuals (all rows
    # weighted 1 here) average to the loss
    assert result.loss <= np.nanmin(result.curves) + 1e-15
    np.testing.assert_allclose(result.layer_residual.mean(), result.loss, rtol=1e-9, atol=1e-15)


def test_intervals_from_held_out_realizations_are_finite_and_written(tmp_path):
    """Data from one realization (key 0), fitted with an ensemble from other keys: the profile
    likelihood under the noise of held-out realizations gives finite intervals inside the box
    that hold the estimate, simultaneous (the default) and at least as wide as the marginal
    ones; params.json (version 2) carries them and the profiles as strict JSON."""
    config = CONFIG.replace(coupling=sg.Tied(), held_out=16, profile_steps=2)
    B = np.array([[1.0, 0.3], [0.5, 1.5]])
    target = sf.make_target(sf.synthetic_shares(jax.random.key(0), truth(B), config))
    result = sf.fit(target, jax.random.key(1000), config)
    iv = result.intervals
    assert iv.draws == 16 and iv.level == 0.9 and iv.simultaneous
    assert iv.threshold == pytest.approx(7.7794, abs=1e-4)  # chi2_4(0.9): B's four entries
    est = np.asarray(result.params.B)
    low, high = np.asarray(iv.low["B"]), np.asarray(iv.high["B"])
    assert np.all(np.isfinite(low)) and np.all(np.isfinite(high))
    assert np.all(POSITIVE_BOX[0] * (1 - 1e-6) <= low) and np.all(high <= POSITIVE_BOX[1] * 1.0001)
    assert np.all(low <= est * (1 + 1e-6)) and np.all(est <= high * (1 + 1e-6))
    assert np.any(high / low > 1.01)  # not degenerate
    np.testing.assert_array_equal(iv.low["K"], iv.low["B"])  # tied: K = B
    assert np.asarray(iv.high["omega_spread"]) == np.asarray(result.params.omega_spread)
    assert np.all(np.asarray(iv.noise_sd)[..., 0] > 0)  # realizations differ
    # each profile rises from its minimum, and stops once past the threshold or at the box
    pr = iv.profiles
    assert iv.profiled == ("B[0,0]", "B[0,1]", "B[1,0]", "B[1,1]")
    rise = pr.deviance - pr.minimum
    assert np.all(rise[np.isfinite(rise)] >= -1e-6 * max(pr.minimum, 1.0))
    obj = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert obj["format_version"] == 2 and obj["params"]["anchor"] == 4.0
    assert obj["intervals"]["B"]["level"] == 0.9
    np.testing.assert_allclose(obj["intervals"]["B"]["low"], low)
    assert obj["interval_method"]["threshold"] == pytest.approx(iv.threshold)
    assert set(obj["interval_method"]["profiles"]) == set(iv.profiled)
    # data of the model class: the misfit is not flagged, and params.json carries it
    assert obj["interval_method"]["misfit"] == {"value": pr.misfit, "dof": pr.dof,
                                                "p": pytest.approx(pr.misfit_p)}
    assert pr.dof > 0 and pr.misfit_p > 1e-3
    assert obj["surrogate"]["realizations"] == 2 and obj["surrogate"]["anchored"] is True
    # the marginal intervals (chi2_1) from the same profiles lie inside the simultaneous ones
    q1 = sf.intervals.threshold(0.9, False, 4)
    box = np.log(np.full(4, POSITIVE_BOX[0])), np.log(np.full(4, POSITIVE_BOX[1]))
    lo4, hi4 = pr.bounds(iv.threshold, *box)
    lo1, hi1 = pr.bounds(q1, *box)
    assert q1 < iv.threshold and np.all(lo4 <= lo1 + 1e-9) and np.all(hi4 >= hi1 - 1e-9)
    np.testing.assert_allclose(np.exp(np.minimum(lo4, np.log(est.ravel()))), low.ravel(),
                               rtol=1e-5)
    # the likelihood-ratio test of points: the estimate lies inside its joint region, a point
    # with the couplings 30x away outside it
    far = result.params.replace(B=result.params.B * 30, K=result.params.K * 30)
    both = jax.tree.map(lambda a, b: np.stack([a, b]), result.params, far)
    rise = sf.deviance(result, target, both) - pr.minimum
    assert -1e-3 * max(pr.minimum, 1.0) <= rise[0] <= iv.threshold < rise[1]


@pytest.mark.slow
def test_sensitivity_refuses_the_shapley_gradient_of_an_observer_that_does_not_work(
        tmp_path, capsys):
    """The unanchored preset's Lorenz observer has test NMSE ~1: the Shapley gradient would be
    noise, so `xmodal sensitivity` refuses it (exit 2, one line with the reason)."""
    code, _, err = run_cli(["sensitivity", "--preset", "paper", "--anchor", "0", "--out",
                            str(tmp_path / "s"), "--steps", "40", "--burn", "20",
                            "--balance-steps", "0"], capsys)
    assert code == 2
    assert "observer" in err and "NMSE" in err and "--no-shapley" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_recovery_from_another_realization_covers_and_separates():
    """benchmarks/fit_recovery.py on (1, 0.1) and (0.1, 1), tied: data from one key, the
    ensemble and the held-out realizations from others, 50 + 50 oscillators. The 90 %
    intervals cover the truth and separate the two couplings (see docs/fit.md for the table);
    the null: two data sets of the same truth (data keys 0 and 1) are not separated."""
    import os

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from fit_recovery import recovery, separated

    quiet = lambda *a, **k: None  # noqa: E731
    rows = recovery("tied", [(1.0, 0.1), (0.1, 1.0)], log=quiet)
    assert all(r["covered"] for r in rows)
    assert separated(rows[0], rows[1])
    again = recovery("tied", [(1.0, 0.1)], data_seed=1, log=quiet)[0]
    assert again["covered"] and not separated(rows[0], again)


