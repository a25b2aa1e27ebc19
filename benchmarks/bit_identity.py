"""Bit for bit: results of this checkout against an earlier revision of the project.

Checks out ``--rev`` (default a3858bc, the last commit before the one RK4 core and the module
split) in a temporary git worktree and runs, in both checkouts, with the same Python:

* ``xmodal sweep`` on two small specs: float32 on the batched path (neighbour-slot field, Lorenz
  drive, every metric) and float64 on the per-point path (dense field, "mean" normalisation);
* ``xmodal lorenz --grid 4`` there, and here the same experiment with that revision's settings
  (no anchoring, additive gain 1, washout 100, train 500, tied coupling): the plane of test NMSE,
  single-input NMSE and Shapley shares.

It prints, per array, "identical" or the largest difference. The ``lyapunov`` metric differs by
design: since input anchoring, conditional exponents start from a random tangent frame (unit
vectors missed the largest exponent of nearly decoupled networks).

    python benchmarks/bit_identity.py [--rev a3858bc]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from xmodal.cli import main; sys.exit(main(sys.argv[1:]))"
SPECS = {
    "batched_f32": {
        "axes": {"beta_self": {"log": [1e-3, 1.0, 4]}, "beta_cross": {"linear": [0.0, 1.0, 3]}},
        "model": {"sizes": [20, 20], "k": 4, "gain": 1.0},
        "run": {"dt": 0.02, "steps": 300, "transient": 100, "sample_every": 5, "drive": "lorenz",
                "metrics": ["order_parameter", "modality_attention", "lyapunov"],
                "chunk_size": 5}},
    "per_point_f64": {
        "axes": {"gain": {"values": [0.0, 0.5, 2.0]}, "kappa_cross": {"linear": [0.0, 0.4, 2]}},
        "model": {"sizes": [15, 25], "k": 6, "p": 0.1, "normalisation": "mean"},
        "run": {"dt": 0.01, "steps": 200, "transient": 50, "sample_every": 4, "kind": "dense",
                "float64": True, "drive": "lorenz",
                "metrics": ["order_parameter", "modality_attention"]}},
}
#: Here, the Lorenz experiment with the first release's settings; prints its tied plane as JSON.
LORENZ_HERE = """
import json, jax
jax.config.update("jax_enable_x64", True)  # as xmodal lorenz
from lorenz.experiment import LorenzConfig, run_experiment
cfg = LorenzConfig(grid=4, coupling="tied", anchor=0.0, gain=1.0, washout=100, train=500)
res, _ = run_experiment(cfg, progress=False, log=lambda *a: None)
print(json.dumps(res["readings"]["tied"]))
"""
PLANE = ("nmse", "nmse_x_only", "nmse_y_only", "phi_x", "phi_y")


def run(checkout: Path, *args: str, code: str = CLI) -> str:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=checkout, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"{checkout}: {' '.join(args) or 'script'} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def compare(name: str, old: dict, new: dict) -> int:
    """Print one line per array; the number that differ."""
    differ = 0
    for key in sorted(old):
        a, b = np.asarray(old[key]), np.asarray(new[key])
        same = a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
        differ += not same
        note = "identical" if same else f"DIFFERS, max |diff| {np.nanmax(np.abs(a - b)):.3g}"
        print(f"  {name:18s} {key:24s} {a.shape!s:14s} {note}")
    return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rev", default="a3858bc", help="the earlier revision (git rev)")
    args = parser.parse_args()
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old_tree = tmp / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(old_tree), args.rev], check=True)
        try:
            for name, spec in SPECS.items():
                path = tmp / f"{name}.json"
                path.write_text(json.dumps(spec))
                arrays = []
                for tag, tree in (("old", old_tree), ("new", ROOT)):
                    out = tmp / f"{name}-{tag}"
                    run(tree, "sweep", str(path), "--out", str(out), "--quiet")
                    arrays.append(dict(np.load(out / "sweep.npz")))
                differ += compare(f"sweep {name}", *arrays)
            run(old_tree, "lorenz", "--grid", "4", "--out", str(tmp / "lorenz-old"), "--quiet")
            old = json.loads((tmp / "lorenz-old" / "results.json").read_text())
            new = json.loads(run(ROOT, code=LORENZ_HERE).strip().splitlines()[-1])
            differ += compare("lorenz plane", {k: old[k] for k in PLANE},
                              {k: new[k] for k in PLANE})
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(old_tree)], check=False)
    print(f"{differ} arrays differ from {args.rev}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
