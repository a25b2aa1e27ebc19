"""``xmodal lorenz`` end to end on a small grid: every file, the schema, internal consistency."""

import json
import os
import subprocess
import sys
from importlib import resources

import jsonschema
import numpy as np
import pytest



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The command as users run it: its own process, sweep sharded over 2 CPU devices (this once
    hung for good in jaxlib's LAPACK kernels: see lorenz.readout.spd_solve)."""
    out = tmp_path_factory.mktemp("lorenz")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-m", "xmodal.cli", "lorenz", "--grid", "2", "--out",
                           str(out), "--seed", "1", "--seeds", "2"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "on 2 cpu device(s)" in proc.stderr
    return out


def test_writes_every_file(run_dir):
    for name in ("results.json", "report.md", "arrays.npz"):
        assert (run_dir / name).stat().st_size > 0
    for name in ("phase_map_tied.png", "phase_map_fixed.png", "lyapunov_tied.png",
                 "lyapunov_fixed.png", "shapley_tied.png", "anchor.png", "echo.png",
                 "prediction.png", "attractor.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_results_validate_against_schema(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    schema = json.loads(resources.files("lorenz").joinpath("results.schema.json").read_text())
    jsonschema.validate(results, schema)
    broken = dict(results, readings={"tied": dict(results["readings"]["tied"], nmse=[[0.5]])})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    # strict JSON: no NaN or Infinity anywhere
    json.loads((run_dir / "results.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_numbers_are_consistent(run_dir):
    r = json.loads((run_dir / "results.json").read_text())
    assert r["config"]["seed"] == 1 and r["config"]["anchor"] == 4.0
    arrays = np.load(run_dir / "arrays.npz")
    report = (run_dir / "report.md").read_text()
    for name in ("tied", "fixed"):
        p = r["readings"][name]
        nmse, phi_x, phi_y = (np.asarray(p[k]) for k in ("nmse", "phi_x", "phi_y"))
        assert nmse.shape == (2, 2)
        assert p["best"]["nmse"] == nmse.min() and p["worst"]["nmse"] == nmse.max()
        # Efficiency of the Shapley values at every point: phi_X + phi_Y = v(XY) - v() = 1 - NMSE.
        np.testing.assert_allclose(phi_x + phi_y, 1 - nmse, atol=1e-9)
        assert p["corners"]["high_low"]["beta_self"] == pytest.approx(1.0)
        assert p["corners"]["high_low"]["beta_cross"] == pytest.approx(1e-4)
        assert p["corners"]["low_high"]["nmse"] == nmse[0, 1]
        np.testing.assert_array_equal(arrays[f"nmse_{name}"], nmse)
        assert f"Verdict ({name}): the claim" in report
        assert f"{p['best']['nmse']:.4g}" in report
        # the anchored observer works: far better than the mean predictor (NMSE 1)
        assert p["best"]["nmse"] < 0.05
        # spreads over the two seeds bracket the first seed's plane
        seeds = p["seeds"]
        assert seeds["n_seeds"] == 2 and len(seeds["claim_holds"]) == 2
        lo, hi = np.asarray(seeds["nmse"]["min"]), np.asarray(seeds["nmse"]["max"])
        assert np.all(lo <= nmse) and np.all(nmse <= hi) and np.any(lo < hi)
    assert r["readings"]["fixed"]["kappa"] == 0.3 and r["readings"]["tied"]["kappa"] is None
    scan = np.asarray(r["anchor_scan"]["nmse"])
    assert scan.shape == (len(r["anchor_scan"]["anchors"]), len(r["anchor_scan"]["kappas"]))
    assert "2 graphs and frequency draws" in report


@pytest.mark.parametrize(
    "argv, message",
    [(["--grid", "1"], "--grid must be >= 2"), (["--grid", "x"], "argument --grid"),
     (["--device", "abacus"], "argument --device: invalid choice")],
)
def test_bad_arguments(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xmodal.cli", "lorenz", "--out",
                           str(tmp_path / "o"), *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr
