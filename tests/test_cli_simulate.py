"""``xmodal simulate`` end to end (in-process), and argument errors (exit code 2)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from xmodal.cli import main


def test_simulate_writes_trajectory_metrics_and_figure(tmp_path):
    out = tmp_path / "run"
    rc = main(["simulate", "--duration", "2", "--dt", "0.02", "--save-every", "5",
               "--beta-self", "0.5", "--beta-cross", "0.2", "--seed", "3", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    data = np.load(out / "trajectory.npz")
    assert data["theta"].shape == (21, 100) and data["ts"].shape == (21,)
    assert metrics["n_steps"] == 100 and metrics["parameters"]["seed"] == 3
    p = np.asarray(metrics["modality_attention_mean"])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert metrics["dominance_01"] == pytest.approx(np.log(p[1, 0] / p[0, 1]), rel=1e-4)
    assert all(0 <= r <= 1 for r in metrics["order_parameter_final"])
    assert (out / "simulate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporaries


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dt", "-1"], "argument --dt: must be positive"),
        (["--duration", "abc"], "argument --duration: not a number"),
        (["--beta-self", "nan"], "argument --beta-self: must be finite"),
        (["--sizes", "50"], "argument --sizes: need >= 2 positive sizes"),
        (["--normalisation", "l2"], "argument --normalisation: invalid choice"),
        (["--duration", "0.05", "--dt", "0.01"], "fewer than --save-every"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(argv, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "xmodal.cli", "simulate", "--out", str(tmp_path / "x"), *argv],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def test_out_must_be_a_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--duration", "0.1", "--out", str(blocker)])
    assert exc.value.code == 2
    assert blocker.read_text() == "keep me"


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "simulate" in capsys.readouterr().out


def test_simulate_bundle_is_the_fits_forward_model_and_a_default_fit_adopts_its_structure(
        tmp_path):
    """`xmodal simulate --bundle` writes the attention of the fit's forward model (this seed's
    realization, the simulate options, layers at t_l = 4 (l + 1) / L) in the probe's format,
    with the options in its metadata; `xmodal fit` of it adopts the graph structure."""
    import jax
    import jax.numpy as jnp

    from mllm_probe.bundle import load_block_shares
    from surrogate import fitting as sf

    path = tmp_path / "s.bundle"
    rc = main(["simulate", "--sizes", "12,12", "--duration", "0.5", "--dt", "0.05",
               "--save-every", "5", "--beta-self", "1", "--beta-cross", "0.1", "--anchor", "3",
               "--seed", "7", "--layers", "4", "--bundle", str(path), "--out", str(tmp_path / "o")])
    assert rc == 0
    s = load_block_shares(path)
    rec = s.surrogate
    assert rec["seed"] == 7 and rec["anchor"] == 3.0 and rec["sizes"] == [12, 12]
    np.testing.assert_allclose(rec["layer_times"], [1.0, 2.0, 3.0, 4.0])
    config = sf.FitConfig(sizes=(12, 12), k=10, cross_density=0.1, anchor=3.0)
    params = sf.FitParams(B=jnp.asarray(rec["B"]), K=jnp.asarray(rec["K"]),
                          omega_spread=jnp.asarray(1.0), gain=jnp.zeros(2),
                          anchor=jnp.asarray(3.0), times=jnp.asarray(rec["layer_times"]))
    expect = sf.synthetic_shares(jax.random.key(7), params, config)
    np.testing.assert_allclose(s.shares, expect, atol=1e-6)  # float32 in the file
    assert s.shares[0, 0, 1] != pytest.approx(s.shares[0, 1, 0], abs=1e-3)  # not symmetric
    out = tmp_path / "fit"
    rc = main(["fit", str(path), "--out", str(out), "--realizations", "2", "--restarts", "1",
               "--steps", "3", "--polish-steps", "1", "--held-out", "0", "--anchor", "3"])
    assert rc == 0
    obj = json.loads((out / "params.json").read_text())
    assert obj["surrogate"]["sizes"] == [12, 12] and obj["surrogate"]["k"] == 10
    assert obj["surrogate"]["cross_density"] == 0.1 and obj["params"]["anchor"] == 3.0
    assert obj["intervals"] is None  # --held-out 0 (intervals: tests/test_fit.py)
