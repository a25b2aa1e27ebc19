"""``xmodal lyapunov`` in-process: JSON output, the table, the convergence plot, bad arguments."""

import json
import math

import numpy as np
import pytest

from xmodal.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _json(capsys, argv):
    assert main(["lyapunov", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_lorenz_json_and_plot(capsys, tmp_path):
    plot = tmp_path / "conv.png"
    out = _json(capsys, ["--steps", "20000", "--transient", "500", "--plot", str(plot)])
    lam = np.asarray(out["exponents"])
    assert lam.shape == (3,) and out["dtype"] == "float64" and out["horizon"] == 200.0
    assert out["exact_sum"] == pytest.approx(-(10 + 1 + 8 / 3))
    assert out["sum"] == pytest.approx(out["exact_sum"], abs=1e-3)
    assert abs(lam[0] - 0.9056) < 0.1 and abs(lam[1]) < 0.05 and abs(lam[2] + 14.57) < 0.2
    assert out["kaplan_yorke"] == pytest.approx(2 + (lam[0] + lam[1]) / abs(lam[2]), rel=1e-9)
    assert out["reference"]["exponents"] == [0.9056, 0.0, -14.5723]
    assert plot.read_bytes()[:8] == PNG and out["plot"] == str(plot)


def test_henon_and_parameters(capsys):
    out = _json(capsys, ["--system", "henon", "--steps", "20000"])
    assert out["units"] == "per iteration" and out["dt"] is None
    assert out["sum"] == pytest.approx(math.log(0.3), abs=1e-9)
    np.testing.assert_allclose(out["exponents"], [0.4192, -1.6232], atol=0.02)
    other = _json(capsys, ["--system", "henon", "--steps", "2000", "--param", "b=0.2", "--k", "1"])
    assert other["reference"] is None and other["exact_sum"] is None  # k < n: no sum rule
    assert len(other["exponents"]) == 1 and other["parameters"]["b"] == 0.2


def test_surrogate_point(capsys):
    argv = ["--system", "surrogate", "--sizes", "6,6", "--degree", "2", "--steps", "300",
            "--transient", "100", "--k", "2", "--beta-self", "0.5", "--beta-cross", "0.2"]
    out = _json(capsys, argv)
    assert len(out["exponents"]) == 2 and all(math.isfinite(v) for v in out["exponents"])
    assert out["modulo_phase_shift"] is True and out["drive"] == "lorenz"
    assert out["beta_self"] == 0.5 and out["reference"] is None


def test_table_output(capsys):
    assert main(["lyapunov", "--system", "rossler", "--steps", "2000", "--transient", "0"]) == 0
    text = capsys.readouterr().out
    assert "Roessler" in text and "published" in text and "Kaplan-Yorke dimension" in text
    assert "0.0714" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--k", "0"], "argument --k: must be >= 1"),
        (["--system", "duffing"], "argument --system: invalid choice"),
        (["--steps", "ten"], "argument --steps: not an integer"),
        (["--param", "rh=3"], "--param rh: lorenz has parameters sigma, rho, beta"),
        (["--param", "rho"], "argument --param: expected NAME=VALUE"),
        (["--system", "henon", "--dt", "0.1"], "--dt: the Henon map has no time step"),
        (["--k", "4", "--steps", "10"], "--k 4: lorenz has dimension 3"),
        (["--y0", "1,2"], "--y0: lorenz needs 3 values"),
        (["--steps", "10", "--renorm-every", "3"], "--steps 10 must be a multiple"),
        (["--plot", "/nonexistent-dir/x.png"], "--plot /nonexistent-dir/x.png"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["lyapunov", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
