"""``xmodal lorenz`` end to end on a small grid: every file, the schema, internal consistency."""

import json
import os
import subprocess
import sys
from importlib import resources

import jsonschema
import numpy as np
import pytest

ARGS = ["--grid", "2", "--seed", "1", "--replications", "2", "--anchor", "4",
        "--encoding-scale", "0.5"]


#: The fields of an ``xmodal fit`` params.json that ``--mark`` reads.
FIT = {"format": "xmodal-fit", "params": {"B": [[1.0, 0.1], [0.2, 4.0]]},
       "intervals": {"B": {"low": [[0.5, 0.05], [0.1, 2.0]], "high": [[2.0, 0.3], [0.4, 8.0]],
                           "level": 0.9}}}


def _lorenz(out, *extra):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    return subprocess.run([sys.executable, "-m", "xmodal.cli", "lorenz", "--out", str(out),
                           *ARGS, *extra], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The command as users run it, in its own process, on a small grid with h and s given (the
    validation selection is tested in tests/test_lorenz_plane.py)."""
    out = tmp_path_factory.mktemp("lorenz")
    mark = tmp_path_factory.mktemp("fit") / "params.json"
    mark.write_text(json.dumps(FIT))
    proc = _lorenz(out, "--mark", str(mark))
    assert proc.returncode == 0, proc.stderr
    assert "on 2 cpu device(s)" in proc.stderr
    return out


def test_writes_every_file(run_dir):
    for name in ("results.json", "report.md", "arrays.npz"):
        assert (run_dir / name).stat().st_size > 0
    for name in ("phase_map_tied.png", "phase_map_fixed.png", "shapley_tied.png", "anchor.png",
                 "echo.png", "prediction.png", "attractor.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_finished_planes(run_dir, tmp_path):
    """A run killed after its tied plane: --resume reads that plane back, computes the rest and
    writes the same numbers; without --resume a non-empty --out is refused."""
    out = tmp_path / "killed"
    (out / "planes").mkdir(parents=True)
    tied = run_dir / "planes" / "tied-seed0.npz"
    (out / "planes" / tied.name).write_bytes(tied.read_bytes())
    refused = _lorenz(out)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    proc = _lorenz(out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "plane (tied, seed 0): finished before" in proc.stderr
    assert "plane (fixed, seed 0): finished before" not in proc.stderr
    a, b = np.load(run_dir / "arrays.npz"), np.load(out / "arrays.npz")
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


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
    assert r["config"]["seed"] == 1 and r["anchor"] == 4.0 and r["selection"] is None
    arrays = np.load(run_dir / "arrays.npz")
    report = (run_dir / "report.md").read_text()
    for name in ("tied", "fixed"):
        p = r["readings"][name]
        nmse = arrays[f"nmse_{name}"]  # (seeds, replications, g, g, coalitions, splits)
        assert nmse.shape == (1, 2, 2, 2, 3, 3) and p["replications"] == 2
        geo = np.exp(np.log(nmse[..., 0, 2]).mean((0, 1)))
        np.testing.assert_allclose(np.asarray(p["nmse"]), geo, rtol=1e-12)
        # the best point is the argmin of validation NMSE, not of test NMSE
        val = np.log(nmse[..., 0, 1]).mean((0, 1))
        assert tuple(p["best"]["index"]) == np.unravel_index(np.argmin(val), val.shape)
        # efficiency of the scale-free Shapley values: phi_X + phi_Y = -log10 NMSE
        np.testing.assert_allclose(np.asarray(p["phi_x"]) + np.asarray(p["phi_y"]),
                                   -np.log10(nmse[..., 0, 2]).mean((0, 1)), rtol=1e-9)
        for v in p["verdicts"].values():
            assert v["lo"] <= v["effect"] <= v["hi"] and v["n"] == 2
            assert f"**{v['word']}**" in report
        assert p["best"]["nmse_test"]["mean"] < 0.05  # the anchored observer works
        assert p["washout"]["count"] == 8
    assert r["readings"]["fixed"]["kappa"] == 0.3 and r["readings"]["tied"]["kappa"] is None
    scan = np.asarray(r["anchor_scan"]["nmse"])
    assert scan.shape == (len(r["anchor_scan"]["anchors"]), len(r["anchor_scan"]["kappas"]))
    assert "2 independent Lorenz trajectories" in report


@pytest.mark.parametrize(
    "argv, message",
    [(["--grid", "1"], "argument --grid: must be >= 2"), (["--grid", "x"], "argument --grid"),
     (["--replications", "1"], "argument --replications: must be >= 2"),
     (["--encoding-scale", "-1"], "argument --encoding-scale: must be in [0, 1000]"),
     (["--device", "abacus"], "argument --device: invalid choice"),
     (["--mark", "missing.json"], "missing.json"),
     (["--mark", "{dir}/b.json"], "field 'params.B' must be a 2 x 2 matrix"),
     (["--mark", "{dir}/f.json"], "field 'format' must be 'xmodal-fit'")],
)
def test_bad_arguments(argv, message, tmp_path):
    (tmp_path / "b.json").write_text(json.dumps({**FIT, "params": {"B": [[1.0, -1.0]]}}))
    (tmp_path / "f.json").write_text(json.dumps({**FIT, "format": "xmodal-sweep"}))
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "xmodal.cli", "lorenz", "--out",
                           str(tmp_path / "o"), *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr


def test_mark_is_the_fit_on_the_plane(tmp_path):
    """--mark: beta_self, beta_cross the means of B's diagonal and off-diagonal, the ranges the
    span of their intervals; the phase map changes where it is drawn."""
    from lorenz.figures import phase_map
    from xmodal.commands.lorenz import fit_mark

    (tmp_path / "params.json").write_text(json.dumps(FIT))
    mark = fit_mark(tmp_path / "params.json")
    assert mark["beta_self"] == pytest.approx(2.5) and mark["beta_cross"] == pytest.approx(0.15)
    assert mark["self_range"] == (0.5, 8.0) and mark["cross_range"] == (0.05, 0.4)
    import matplotlib.image

    betas = np.logspace(-2, 1, 3)
    nmse, phi = np.full((3, 3), 0.1), np.ones((3, 3, 2))
    images = []
    for name, marks in (("none", []), ("mark", [mark])):
        phase_map(tmp_path / f"{name}.png", betas, nmse, phi, marks)
        images.append(matplotlib.image.imread(tmp_path / f"{name}.png"))
    assert images[0].shape == images[1].shape and np.abs(images[0] - images[1]).max() > 0.5
