"""surrogate.fit: targets from bundles (read by mllm_probe.bundle), round-trip recovery of the
anchored ensemble model through the real bundle format, intervals from held-out realizations,
identifiability report, params.json (versions 1 and 2), and `xmodal fit` / `xmodal
sensitivity` end to end on a bundle captured from a tiny Qwen2.5-Omni thinker by the probe."""

import json
import subprocess
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
    make_bundle,
    save_bundle,
    shares_bundle,
)
from surrogate import fitting as sf
from surrogate.fitting.model import POSITIVE_BOX, fit_keys

L = 8
#: Small, informative synthetic setting (fast on 2 CPU cores): the anchored model (h = 4),
#: 2 realizations, no bootstrap. Shared by the fits below so that they reuse one compilation.
CONFIG = sf.FitConfig(sizes=(10, 10), k=4, cross_density=0.3, horizon=3.0, dt=0.1, n_initial=1,
                      realizations=2, restarts=2, steps=60, patience=30, tol=1e-3,
                      polish_steps=12, init_spread=0.2, fit_spread=False, fit_gain=False,
                      bootstrap=0)


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
    """Data from one realization (key 0), fitted with an ensemble from other keys: the bootstrap
    over held-out realizations gives finite intervals inside the box that hold the estimate;
    params.json (version 2) carries them as strict JSON, and reads back."""
    config = CONFIG.replace(coupling=sg.Tied(), bootstrap=2, bootstrap_steps=3)
    B = np.array([[1.0, 0.3], [0.5, 1.5]])
    target = sf.make_target(sf.synthetic_shares(jax.random.key(0), truth(B), config))
    result = sf.fit(target, jax.random.key(1000), config)
    iv = result.intervals
    assert iv.refits == 2 and iv.level == 0.9
    est = np.asarray(result.params.B)
    low, high = np.asarray(iv.low["B"]), np.asarray(iv.high["B"])
    assert np.all(np.isfinite(low)) and np.all(np.isfinite(high))
    assert np.all(POSITIVE_BOX[0] * (1 - 1e-9) <= low) and np.all(high <= POSITIVE_BOX[1] * 1.0001)
    assert np.all(low <= est * (1 + 1e-9)) and np.all(est <= high * (1 + 1e-9))
    np.testing.assert_array_equal(iv.low["K"], iv.low["B"])  # tied: K = B
    assert np.asarray(iv.high["omega_spread"]) == np.asarray(result.params.omega_spread)
    assert np.all(np.asarray(iv.noise_sd) > 0)  # realizations differ
    assert len(iv.profile["loss"]) == 7 and iv.profile["loss"][3] == pytest.approx(result.loss)
    obj = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert obj["format_version"] == 2 and obj["params"]["anchor"] == 4.0
    assert obj["intervals"]["B"]["level"] == 0.9
    np.testing.assert_allclose(obj["intervals"]["B"]["low"], low)
    assert obj["surrogate"]["realizations"] == 2 and obj["surrogate"]["anchored"] is True
    report = sf.fit_report_markdown(result)
    assert "## 90 % intervals" in report and "held-out realizations" in report
    model, params = sf.model_from_json(obj)
    assert model.realizations == 2 and model.anchored
    np.testing.assert_allclose(sf.model_attention(model, params), result.model_mass, atol=1e-9)


def test_params_json_version_1_reads_as_the_unanchored_model():
    """A params.json of the first format (no anchor, no realizations) still reads: the
    unanchored model, one realization."""
    obj = {"format": "xmodal-fit", "format_version": 1, "seed": 3,
           "modalities": ["audio", "vision"],
           "surrogate": {"sizes": [10, 10], "k": 4, "p": 0.01, "cross_density": 0.3,
                         "normalisation": "softmax", "n_initial": 2, "horizon": 3.0, "dt": 0.1},
           "params": {"B": [[1, 0.5], [0.5, 1]], "K": [[1, 0.5], [0.5, 1]], "omega_spread": 0.2,
                      "gain": [0, 0], "times": [1.0, 2.0, 3.0]}}
    model, params = sf.model_from_json(obj)
    assert not model.anchored and model.realizations == 1 and model.theta0.shape == (1, 2, 20)
    assert float(params.anchor) == 0.0
    p = sf.model_attention(model, params)
    assert p.shape == (3, 2, 2) and np.allclose(p.sum(-1), 1.0)


def test_import_surrogate_loads_no_probe_torch_or_matplotlib():
    code = ("import surrogate, sys; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('mllm_probe', 'torch', 'matplotlib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_free_couplings_report_what_the_data_cannot_pin_down():
    """Free B, K and gains of the unanchored model: the fit reproduces the data, and the Fisher
    spectrum flags the common gain (an exact symmetry without anchoring: a common rotation
    changes no phase difference; the anchor breaks it) and the cross couplings as not pinned
    down."""
    config = CONFIG.replace(fit_gain=True, restarts=2, steps=40, polish_steps=6, anchored=False)
    true = truth([[2.0, 1.0], [1.5, 2.5]], [[1.5, 0.8], [1.0, 2.0]], gain=(0.3, -0.3), anchor=0.0)
    key = jax.random.key(5)
    target = target_of(ensemble_bundle(key, true, config))
    result = sf.fit(target, key, config)
    assert result.loss < 1e-3
    assert {"gain[0]", "gain[1]"} <= set(result.unidentified)
    common = [d for d in result.sloppy_directions if "gain[0]" in d and "gain[1]" in d]
    assert common and result.hessian_eigvals[0] < 1e-8 * result.hessian_eigvals[-1]
    report = sf.fit_report_markdown(result)
    assert "not pinned down" in report and "gain[0]" in report
    assert len(result.param_names) == 10  # 4 B + 4 K + 2 gains (spread fixed)
    obj = result.to_json()
    model, params = sf.model_from_json(json.loads(json.dumps(obj)))
    np.testing.assert_allclose(params.B, result.params.B)
    np.testing.assert_allclose(sf.model_attention(model, params), result.model_mass, atol=1e-9)


def test_bundle_target_heads_renormalisation_and_errors():
    block = np.zeros((2, 2, 4, 4), np.float32)
    block[:, 0, 1] = [0.2, 0.6, 0.2, 0.0]  # audio rows, head 0: 0.6 own, 0.2 vision, 0.2 text
    block[:, 1, 1] = [0.0, 0.4, 0.4, 0.2]
    block[:, :, 2] = [0.5, 0.25, 0.25, 0.0]  # vision rows
    tm = np.array([0, 0, 1, 1, 1, 2, 2])
    b = make_bundle(block, ("text", "audio", "vision", "special"), ("full_attention",) * 2, tm,
                    np.arange(2, 7))
    t = target_of(b)
    np.testing.assert_allclose(t.mass[0], [[0.625, 0.375], [0.5, 0.5]], atol=1e-6)
    np.testing.assert_allclose(target_of(b, heads=[1]).mass[0, 0], [0.5, 0.5], atol=1e-6)
    assert t.token_counts == (3.0, 2.0) and np.all(np.asarray(t.weight) == 1)
    with pytest.raises(ValueError, match=r"b\.bundle: field 'modalities'.*'face'"):
        block_shares(b, ("audio", "face"), source="b.bundle")
    with pytest.raises(ValueError, match="heads"):
        block_shares(b, heads=[3])
    only_text = make_bundle(block, ("text", "audio", "vision", "special"), ("full_attention",) * 2,
                            tm, np.arange(0, 2))
    with pytest.raises(ValueError, match="field 'query_index'.*--query all"):
        block_shares(only_text, source="t.bundle")
    with pytest.raises(ValueError, match="shape"):
        sf.make_target(np.ones((3, 2)))
    assert sf.sizes_from_counts([25, 16], 48, 8) == (28, 20)  # 8 each + 32 split 25:16
    with pytest.raises(ValueError, match="time_map"):
        sf.FitConfig(time_map="log")
    with pytest.raises(ValueError, match="horizon"):
        sf.FitConfig(horizon=1.0, dt=0.3)




def test_cli_errors_exit_2_naming_the_file(tmp_path, capsys):
    code, _, err = run_cli(["fit", str(tmp_path / "none.bundle"), "--out", str(tmp_path / "o")],
                           capsys)
    assert code == 2 and "none.bundle: no such file" in err
    bad = tmp_path / "bad.bundle"
    bad.write_bytes(b"not safetensors")
    code, _, err = run_cli(["fit", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "bad.bundle" in err
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"format": "xmodal-fit", "seed": 0}))
    code, _, err = run_cli(["sensitivity", str(params), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "params.json" in err and "'surrogate'" in err
    code, _, err = run_cli(["sensitivity", "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "PARAMS.json or --preset" in err


def test_tiny_qwen_capture_fits_end_to_end(tmp_path, capsys):
    """A bundle captured by the probe from a tiny random Qwen2.5-Omni thinker (audio + image,
    all query rows) goes through `xmodal fit` and `xmodal sensitivity` without error."""
    from test_probe_adapters import write_media

    from mllm_probe.adapters import load_adapter
    from mllm_probe.probe import probe_files
    from mllm_probe.tiny import save_tiny_qwen_omni

    media = write_media(str(tmp_path))
    adapter = load_adapter(save_tiny_qwen_omni(tmp_path / "qwen", full=False))
    bundle = probe_files(adapter, "what emotion is this", audio=media["audio"],
                         image=media["image"], query="all")
    path = tmp_path / "qwen.bundle"
    save_bundle(path, bundle)
    out = tmp_path / "fit"
    code, stdout, err = run_cli(["fit", str(path), "--out", str(out), "--n-total", "24",
                                 "--k", "4", "--horizon", "2", "--dt", "0.1", "--realizations",
                                 "2", "--restarts", "2", "--steps", "15", "--polish-steps", "3",
                                 "--bootstrap", "0"],
                                capsys)
    assert code == 0, err
    assert "step 1/15" in err and "wrote" in stdout
    obj = json.loads((out / "params.json").read_text())
    assert obj["modalities"] == ["audio", "vision"] and len(obj["params"]["times"]) == 4
    assert np.isfinite(obj["loss"]) and obj["sources"] == [str(path)]
    assert sum(obj["surrogate"]["sizes"]) == 24
    assert "# Surrogate fit report" in (out / "report.md").read_text()
    assert (out / "loss.png").stat().st_size > 0 and (out / "residuals.png").stat().st_size > 0
    sens = tmp_path / "sens"
    code, stdout, err = run_cli(["sensitivity", str(out / "params.json"), "--out", str(sens),
                                 "--steps", "20", "--burn", "10", "--no-shapley",
                                 "--balance-steps", "3"], capsys)
    assert code == 0, err
    assert "| D_01 |" in stdout and "d/dK[0,1]" in stdout
    result = json.loads((sens / "sensitivity.json").read_text())
    assert len(result["metrics"]["D_01"]["gradient"]) == 10
    assert np.all(np.isfinite(result["metrics"]["D_01"]["gradient"]))
    assert len(result["balance"]["D_01"]) == 4 and (sens / "sensitivity.png").is_file()


@pytest.mark.slow
def test_learned_time_map_and_all_parameters_fit():
    """Learned monotone time map, free couplings, omega spread and gains all fitted."""
    config = CONFIG.replace(time_map="learned", fit_gain=True, fit_spread=True, steps=60,
                            polish_steps=8)
    true = truth([[1.5, 0.8], [1.0, 2.0]], [[1.2, 0.6], [0.9, 1.5]], spread=0.3,
                 gain=(0.2, -0.1))
    key = jax.random.key(7)
    target = target_of(ensemble_bundle(key, true, config))
    result = sf.fit(target, key, config)
    times = np.asarray(result.params.times)
    assert np.all(np.diff(times) > 0) and abs(times[-1] - config.horizon) < 1e-9
    assert result.loss < 1e-3 and result.loss < np.nanmin(result.curves[:, 0])
    assert len(result.param_names) == 4 + 4 + 1 + 2 + L


@pytest.mark.slow
def test_sensitivity_paper_preset_with_shapley(tmp_path, capsys):
    out = tmp_path / "sens"
    code, stdout, err = run_cli(["sensitivity", "--preset", "paper", "--out", str(out),
                                 "--steps", "60", "--burn", "30", "--balance-steps", "3"],
                                capsys)
    assert code == 0, err
    result = json.loads((out / "sensitivity.json").read_text())
    assert set(result["metrics"]) == {"D_01", "cross_share[0]", "cross_share[1]", "phi_Y-phi_X"}
    assert all(np.all(np.isfinite(m["gradient"])) for m in result["metrics"].values())
    assert "| phi_Y-phi_X |" in stdout
    # the predicted change per e-fold of each block: B_ab times the gradient in B_ab
    B, names = np.asarray(result["couplings"]["B"]), result["parameters"]
    assert set(result["per_log_B"]) == {f"B[{a},{b}]" for a in range(2) for b in range(2)}
    for block, cols in result["per_log_B"].items():
        a, b, k = int(block[2]), int(block[4]), names.index(block)
        assert set(cols) == {"D_01", "cross_share[0]", "cross_share[1]"}
        for metric, v in cols.items():
            assert v["slope"] == pytest.approx(B[a, b] * result["metrics"][metric]["gradient"][k])
    assert "d metric / d log B_ab" in stdout


def test_curvature_of_a_steep_float32_jacobian():
    """A float32 Jacobian with entries ~1e24 (a fit stopped early in a steep region) squares past
    float32's range; the curvature is computed in float64 and stays finite, and a non-finite
    Jacobian is an error naming the cause, not numpy's 'Eigenvalues did not converge'."""
    from surrogate.fitting.identifiability import curvature

    jac = np.array([[1e24, 1.0], [2.0, 3e-3]], np.float32)
    c = curvature(jac, ("B[0,0]", "gain[0]"), "kl", 1e-3)
    assert np.all(np.isfinite(c.eigvals)) and c.eigvals[-1] > 1e47
    assert c.unidentified == ("gain[0]",)
    with pytest.raises(ValueError, match="Jacobian at the best fit is not finite"):
        curvature(np.array([[np.nan, 1.0]]), ("B[0,0]", "gain[0]"), "kl", 1e-3)


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
    ensemble and the bootstrap from others, 50 + 50 oscillators. The 90 % intervals cover the
    truth and separate the two couplings (see docs/fit.md for the full table)."""
    import os

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from fit_recovery import recovery, separated

    rows = recovery("tied", [(1.0, 0.1), (0.1, 1.0)], log=lambda *a, **k: None)
    assert all(r["covered"] for r in rows)
    assert separated(rows[0], rows[1])


def test_interval_table_gives_unidentified_coordinates_the_whole_box():
    """Percentile interval of the deviations around the fit for a pinned coordinate; the whole
    box (1e-4 .. 1e2) for one flagged as not pinned down, whatever its refits did."""
    from surrogate.fitting.intervals import interval_table
    from surrogate.fitting.model import unconstrain

    B = jnp.asarray([[1.0, 0.1], [0.2, 2.0]])
    params = sf.FitParams(B=B, K=B, omega_spread=jnp.asarray(1.0), gain=jnp.zeros(2),
                          anchor=jnp.asarray(4.0), times=jnp.asarray([1.0, 2.0]))
    raw = unconstrain(params)
    idx = np.arange(4)  # log_B, ravel order
    dev = np.random.default_rng(0).normal(0, 0.1, (200, 4))
    low, high = interval_table(raw, params, idx, dev, 0.9, True, np.array([0, 1, 0, 0], bool))
    q = np.quantile(dev[:, 0], [0.05, 0.95])
    np.testing.assert_allclose([low["B"][0, 0], high["B"][0, 0]], np.exp(q), rtol=1e-6)
    np.testing.assert_allclose([low["B"][0, 1], high["B"][0, 1]], [1e-4, 1e2], rtol=1e-6)
    np.testing.assert_allclose(low["K"], low["B"])
