"""The core install (``pip install -e .``, no extras) in a fresh virtual environment of its own
(no system site-packages, so nothing of the test environment leaks in): ``xmodal fit`` runs on
an attention bundle, ``xmodal emotion --from-table`` re-analyses a predictions table, and
``xmodal probe`` / ``xmodal emotion`` say which extra to install,
in their help and, in one line with exit code 2, when run.

Slow (a venv and the JAX stack installed: about a minute or more); ``.ci/run`` runs it after
``make test``.
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest
from cli_files import strict_load, write_bundle

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """(python, xmodal) of a fresh venv with the core install only."""
    where = tmp_path_factory.mktemp("core")
    env_dir = where / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "-e", str(ROOT)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return py, env_dir / "bin" / "xmodal", env, where


def _run(core, *argv, timeout=300):
    py, xmodal, env, where = core
    env = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.run([str(xmodal), *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=where)


def test_core_venv_has_no_extras(core):
    py, _, env, _ = core
    code = ("import importlib.util as u, sys; "
            "print([m for m in ('torch', 'transformers', 'soundfile', 'av', 'torchvision', "
            "'reservoirpy', 'pytest') if u.find_spec(m)]); print(sys.prefix)")
    proc = subprocess.run([str(py), "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    found, prefix = proc.stdout.splitlines()
    assert found == "[]", found  # nothing of the test environment leaked in
    assert Path(prefix) == py.parent.parent


def test_fit_runs_on_a_bundle(core):
    where = core[3]
    write_bundle(where / "b.bundle")
    proc = _run(core, "fit", str(where / "b.bundle"), "--out", str(where / "fit"),
                "--restarts", "2", "--steps", "5", "--n-total", "8", "--k", "2",
                "--polish-steps", "2", "--initial", "1", "--horizon", "1", "--dt", "0.1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    params = strict_load((where / "fit" / "params.json").read_text())
    assert isinstance(params, dict) and params["versions"]["jax"]
    for name in ("report.md", "loss.png", "residuals.png"):
        assert (where / "fit" / name).stat().st_size > 0, name


@pytest.mark.parametrize("command", ["probe", "emotion"])
def test_probe_and_emotion_name_the_extra(core, command):
    proc = _run(core, command, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    help_text = " ".join(proc.stdout.split())
    assert "Needs the 'probe' extra (pip install 'xmodal[probe]'); not installed here" in \
        help_text, help_text
    where = core[3]
    argv = (["probe", "--model", str(where), "--prompt", "hi", "--out", str(where / "x.bundle")]
            if command == "probe" else
            ["emotion", "--data", str(where), "--model", str(where), "--out", str(where / "e")])
    proc = _run(core, *argv, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert "\n" not in message, message  # one line
    assert message.startswith(f"xmodal {command}: error: needs the 'probe' extra, which is not "
                              f"installed (missing: torch, transformers"), message
    assert message.endswith("install it with pip install 'xmodal[probe]'"), message
    assert not (where / "e").exists()


def test_emotion_reanalyses_a_table_without_the_probe_extra(core):
    """``xmodal emotion --from-table``: statistics, report and figures from a predictions table,
    with no torch, transformers or media libraries installed."""
    from mllm_probe.emotion import simulate as S

    where = core[3]
    table = where / "run" / "predictions.csv"
    table.parent.mkdir()
    S.write_table(table, S.simulate(3, S.planted((0.5, 0.5, 0.5)), n_clips=60,
                                    variant_indices=range(0, 57, 8)))
    proc = _run(core, "emotion", "--from-table", str(table), "--out", str(where / "again"),
                "--n-boot", "100", "--n-perm", "200")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = strict_load((where / "again" / "summary.json").read_text())
    assert summary["primary"]["analyses"]["unperturbed"]["claim"]["cells"] == 60
    assert (where / "again" / "report.md").stat().st_size > 0
