"""The sweep engine: equals a plain vmap, independent of chunking and device count, resumable
after SIGKILL with a bit-identical result, refuses foreign or damaged stores; the CLI."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import surrogate as sg
from xmodal.cli import main

sweep_mod = sys.modules["surrogate.sweeping.engine"]  # the engine (``sg.sweep`` is its function)

ROOT = Path(__file__).resolve().parents[1]
F64 = jnp.float64

# A small driven surrogate (2 x 6 oscillators): fn(point) integrates it and returns a PyTree.
SYSTEM = """
import jax, jax.numpy as jnp, numpy as np
import surrogate as sg

SUR = sg.paper_preset(jax.random.key(3), sizes=(6, 6), k=2, dtype=DTYPE)
THETA0 = sg.initial_phases(jax.random.key(4), 12, DTYPE)
TS = jnp.linspace(0.0, 50.0, 501, dtype=DTYPE)
SUR = sg.Surrogate(SUR.network, SUR.params, drive=sg.make_drive(TS, jnp.stack(
    [jnp.sin(TS), jnp.cos(0.7 * TS)], -1)))


def fn(point, n_steps=STEPS):
    B = sg.block_matrix(point["beta_self"], point["beta_cross"], 2, DTYPE)
    sur = sg.replace(SUR, B=B, K=B)
    theta = sg.simulate(sur, THETA0, dt=0.01, n_steps=n_steps, save_every=n_steps).ys[-1]
    return {"theta": theta, "stats": (sg.order_parameter(theta, sur), sg.dominance(theta, sur))}
"""
ns: dict = {"__name__": "test_sweep"}
exec(SYSTEM.replace("DTYPE", "jnp.float64").replace("STEPS", "60"), ns)
fn = ns["fn"]


def plane(n_self=5, n_cross=3):
    return sg.grid(beta_self=np.linspace(0.1, 1.0, n_self),
                   beta_cross=np.geomspace(0.01, 1, n_cross))


def plain_vmap(points):
    cols = {k: jnp.asarray(v) for k, v in points.columns.items()}
    return jax.tree.map(np.asarray, jax.jit(jax.vmap(fn))(cols))


def assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


def files(store: Path) -> dict:
    """name -> (inode, mtime_ns) of the store's files."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in store.iterdir()}


# ------------------------------------------------------------------------------- points


def test_grid_is_a_c_order_product_and_unflattens():
    bs, bc = [0.1, 0.2, 0.3], [1.0, 2.0]
    pts = sg.grid(beta_self=bs, beta_cross=bc)
    assert len(pts) == 6 and pts.shape == (3, 2) and pts.names == ("beta_self", "beta_cross")
    np.testing.assert_array_equal(pts.columns["beta_self"], [0.1, 0.1, 0.2, 0.2, 0.3, 0.3])
    np.testing.assert_array_equal(pts.columns["beta_cross"], [1.0, 2.0] * 3)
    assert pts[3] == {"beta_self": 0.2, "beta_cross": 2.0}
    table = pts.unflatten({"x": pts.columns["beta_self"] * 10 + pts.columns["beta_cross"]})
    np.testing.assert_allclose(table["x"], np.add.outer(np.asarray(bs) * 10, bc))
    listed = sg.sweeping.as_points({"a": [1, 2, 3], "seed": np.arange(3)})
    assert listed.shape == (3,) and listed.axes is None


@pytest.mark.parametrize("make, message", [
    (lambda: sg.grid(), "at least one axis"),
    (lambda: sg.grid(beta_self=[]), "'beta_self' must be a non-empty 1-D array"),
    (lambda: sg.grid(beta_self=[[0.1]]), "'beta_self' must be a non-empty 1-D array"),
    (lambda: sg.grid(beta_self=[0.1, np.nan]), "'beta_self' has a non-finite value nan at index 1"),
    (lambda: sg.grid(beta_self=["a"]), "'beta_self' must be numeric"),
    (lambda: sg.sweeping.as_points({"a": [1, 2], "b": [1]}), "equal lengths"),
])
def test_bad_points_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ------------------------------------------------------------------------ in-process sweep


def test_sweep_equals_plain_vmap_for_any_chunking():
    pts = plane()  # 15 points: chunks of 4 leave a ragged, padded last chunk
    ref = plain_vmap(pts)
    outs = {c: sg.sweep(fn, pts, chunk_size=c, progress=False) for c in (1, 4, None)}
    for _, out in outs.items():
        assert jax.tree.structure(out) == jax.tree.structure(ref)
        assert out["theta"].shape == (15, 12) and out["stats"][0].shape == (15, 2)
        assert_trees_close(out, ref, atol=1e-12)
    # each point is the point it claims to be: compare one against a direct call
    one = fn({"beta_self": jnp.asarray(pts[7]["beta_self"]),
              "beta_cross": jnp.asarray(pts[7]["beta_cross"])})
    np.testing.assert_allclose(outs[4]["theta"][7], one["theta"], rtol=0, atol=1e-12)


def test_auto_chunk_size_follows_the_memory_budget(tmp_path, monkeypatch):
    pts = plane(8, 4)  # 32 points
    per_point = []
    real = sweep_mod._auto_chunk_size

    def spy(one_point, program, devices, n_points):
        m = one_point.compile().memory_analysis()
        per_point.append(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
        return real(one_point, program, devices, n_points)

    monkeypatch.setattr(sweep_mod, "_auto_chunk_size", spy)
    monkeypatch.setattr(sweep_mod, "_device_bytes", lambda devices: 10**12)
    sg.sweep(fn, pts, store=tmp_path / "big", progress=False)
    assert json.loads((tmp_path / "big/manifest.json").read_text())["chunk_size"] == 32
    # a budget for 5 points per device gives chunks of 5
    monkeypatch.setattr(sweep_mod, "_device_bytes",
                        lambda devices: int(5.5 * per_point[0] / sweep_mod.MEMORY_FRACTION))
    out = sg.sweep(fn, pts, store=tmp_path / "small", progress=False)
    manifest = json.loads((tmp_path / "small/manifest.json").read_text())
    assert manifest["chunk_size"] == 5 and manifest["n_chunks"] == 7
    assert len(list((tmp_path / "small").glob("chunk-*.npz"))) == 7
    assert_trees_close(out, plain_vmap(pts), atol=1e-12)


def test_list_of_points_with_integer_seeds():
    pts = {"beta_self": np.array([0.2, 0.9, 0.2]), "seed": np.array([0, 1, 2])}

    def noisy(p):
        x = jax.random.normal(jax.random.key(p["seed"]), (3,), F64)
        return p["beta_self"] * x

    out = sg.sweep(noisy, pts, chunk_size=2, progress=False)
    for i in range(3):
        want = pts["beta_self"][i] * jax.random.normal(jax.random.key(i), (3,), F64)
        np.testing.assert_allclose(out[i], want, rtol=1e-15)


def test_progress_reports_rate_and_eta(capsys):
    sg.sweep(fn, plane(2, 2), chunk_size=2)
    err = capsys.readouterr().err
    assert "compiled test_sweep.fn for chunks of 2 points on 1 cpu device(s)" in err
    assert "4/4 points (100.0%)" in err and "points/s, ETA 0:00:00" in err


def test_progress_bar_on_a_terminal_only(tmp_path):
    """On a terminal (a pty) the sweep draws a tqdm bar and no summary line; the line above is
    what a log or pipe gets instead."""
    import fcntl
    import pty
    import struct
    import termios

    script = tmp_path / "run.py"
    script.write_text("import numpy as np\nimport surrogate as sg\n"
                      "sg.sweep(lambda p: {'x': 2 * p['a']}, sg.grid(a=np.arange(6.0)), "
                      "chunk_size=2)\n")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=follower, stdout=follower,
                            stderr=follower, env=_env())
    os.close(follower)
    out = b""
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(leader)
    assert proc.wait(timeout=120) == 0, out.decode(errors="replace")
    text = out.decode(errors="replace")
    assert "sweep: 100%|" in text and "6/6 [" in text and "points/s]" in text, text
    assert "6/6 points (100.0%)" not in text, text


# -------------------------------------------------------------------------------- stores


def test_store_resume_loads_chunks_without_recomputing(tmp_path, capsys):
    store, pts = tmp_path / "s", plane()
    first = sg.sweep(fn, pts, chunk_size=4, store=store, config={"dt": 0.01})
    before = files(store)
    assert sorted(before) == ["chunk-00000.npz", "chunk-00001.npz", "chunk-00002.npz",
                              "chunk-00003.npz", "manifest.json"]
    with np.load(store / "chunk-00003.npz") as z:
        np.testing.assert_array_equal(z["indices"], [12, 13, 14])
    capsys.readouterr()
    again = sg.sweep(fn, pts, store=store, config={"dt": 0.01}, resume=True)
    err = capsys.readouterr().err
    assert "4 of 4 chunks on disk" in err and "compiled" not in err
    assert files(store) == before
    for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(x, y)


def test_existing_store_needs_resume(tmp_path):
    store = tmp_path / "s"
    sg.sweep(fn, plane(), chunk_size=8, store=store, progress=False)
    before = files(store)
    with pytest.raises(sg.sweeping.SweepStoreError,
                       match=r"already holds a sweep \(2 of 2 chunks\); pass resume=True"):
        sg.sweep(fn, plane(), chunk_size=8, store=store, progress=False)
    assert files(store) == before


def _other_steps(point):
    return ns["fn"](point, n_steps=61)


_same_name: dict = {"__name__": "test_sweep"}  # fn again, same name, one constant changed
exec(SYSTEM.replace("DTYPE", "jnp.float64").replace("STEPS", "60").replace("0.7 * TS", "0.8 * TS"),
     _same_name)


@pytest.mark.parametrize("change, message", [
    (dict(config={"dt": 0.02}), r"config \(config\.dt: store 0\.01, now 0\.02\)"),
    (dict(points=plane(5, 4)), "points"),
    (dict(chunk_size=5), r"chunk size \(chunk_size: store 4, now 5\)"),
    (dict(fn=_other_steps), "function name .*lowered one-point program"),
    (dict(fn=_same_name["fn"]), r"differs in lowered one-point program \(fn's computation, "
                                r"constants, JAX version\) \(program_sha256: store \"[0-9a-f]"),
])
def test_store_from_another_configuration_is_rejected(tmp_path, change, message):
    store = tmp_path / "s"
    base = dict(fn=fn, points=plane(), chunk_size=4, config={"dt": 0.01})
    sg.sweep(**base, store=store, progress=False)
    before = files(store)
    with pytest.raises(sg.sweeping.SweepStoreError,
                       match="made by another configuration; differs in"):
        try:
            sg.sweep(**{**base, **change}, store=store, resume=True, progress=False)
        except sg.sweeping.SweepStoreError as err:
            assert __import__("re").search(message, str(err)), str(err)
            raise
    assert files(store) == before  # nothing written, nothing removed


def test_damaged_and_stray_chunks_are_reported(tmp_path):
    store, pts = tmp_path / "s", plane()
    kw = dict(chunk_size=4, store=store, progress=False)
    sg.sweep(fn, pts, **kw)
    chunk = store / "chunk-00001.npz"
    data = chunk.read_bytes()

    chunk.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(sg.sweeping.SweepStoreError,
                       match=r"chunk-00001.npz: chunk file is truncated or "
                             r"damaged .*delete it and resume"):
        sg.sweep(fn, pts, resume=True, **kw)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo("leaf_0000.npy")  # flip the last byte of its array data
    name_len, extra_len = np.frombuffer(data, "<u2", 2, info.header_offset + 26)  # local header
    end = info.header_offset + 30 + int(name_len) + int(extra_len) + info.compress_size
    flipped = bytearray(data)
    flipped[end - 1] ^= 0xFF  # same size, one value changed: the npz member's CRC catches it
    chunk.write_bytes(bytes(flipped))
    with pytest.raises(sg.sweeping.SweepStoreError, match="truncated or damaged"):
        sg.sweep(fn, pts, resume=True, **kw)

    other = tmp_path / "other"  # a chunk of another sweep, same shapes and name
    sg.sweep(fn, pts, chunk_size=4, store=other, config={"other": True}, progress=False)
    chunk.write_bytes((other / "chunk-00001.npz").read_bytes())
    with pytest.raises(sg.sweeping.SweepStoreError, match=r"chunk-00001.npz: field 'fingerprint'"):
        sg.sweep(fn, pts, resume=True, **kw)

    chunk.write_bytes(data)  # repaired: resumes fine; then a chunk index past the end
    sg.sweep(fn, pts, resume=True, **kw)
    (store / "chunk-00009.npz").write_bytes(data)
    with pytest.raises(sg.sweeping.SweepStoreError,
                       match="chunk 9 does not exist in a sweep of 4 chunks"):
        sg.sweep(fn, pts, resume=True, **kw)

    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "chunk-00000.npz").write_bytes(data)
    with pytest.raises(sg.sweeping.SweepStoreError,
                       match="has chunk files .* but no manifest.json"):
        sg.sweep(fn, pts, chunk_size=4, store=stray, resume=True, progress=False)


def test_failing_fn_leaves_no_store(tmp_path):
    def broken(point):
        return point["missing"]

    with pytest.raises(KeyError):
        sg.sweep(broken, plane(), store=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match=r"config.run\[1\]: set is not JSON-serialisable"):
        sg.sweep(fn, plane(), store=tmp_path / "s", config={"run": [1, {2}]}, progress=False)
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------- separate processes


def _script(tmp_path: Path, body: str, steps: int = 60) -> Path:
    path = tmp_path / "case.py"
    header = "import sys\nimport jax\njax.config.update('jax_enable_x64', True)\n"
    path.write_text(header + SYSTEM.replace("DTYPE", "jnp.float64").replace("STEPS", str(steps))
                    + textwrap.dedent(body))
    return path


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def test_eight_devices_give_the_numbers_of_one(tmp_path):
    script = _script(tmp_path, """
        assert jax.device_count() == 8, jax.devices()
        pts = sg.grid(beta_self=np.linspace(0.1, 1.0, 5), beta_cross=np.geomspace(0.01, 1, 4))
        one = sg.sweep(fn, pts, chunk_size=12, devices=jax.devices()[:1], progress=False)
        eight = sg.sweep(fn, pts, chunk_size=12, store=sys.argv[1])
        np.savez(sys.argv[2], one=one["theta"], eight=eight["theta"],
                 one_d=one["stats"][1], eight_d=eight["stats"][1])
    """)
    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store"), str(out)], capture_output=True,
        text=True, env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "chunks of 12 points on 8 cpu device(s)" in proc.stderr
    manifest = json.loads((tmp_path / "store/manifest.json").read_text())
    assert manifest["n_devices"] == 8 and manifest["n_chunks"] == 2
    r = np.load(out)
    assert r["one"].shape == (20, 12)
    np.testing.assert_allclose(r["eight"], r["one"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r["eight_d"], r["one_d"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r["one"], plain_vmap(sg.grid(
        beta_self=np.linspace(0.1, 1.0, 5), beta_cross=np.geomspace(0.01, 1, 4)))["theta"],
        rtol=0, atol=1e-12)


def test_sigkill_mid_sweep_then_resume_is_bit_identical(tmp_path):
    # 48 points in 16 chunks of 3; each chunk integrates 3 x 4000 steps, so the sweep runs for
    # a few seconds after compiling and is killed once two chunks are on disk.
    script = _script(tmp_path, """
        pts = sg.grid(beta_self=np.linspace(0.1, 1.0, 8), beta_cross=np.geomspace(0.01, 1, 6))
        store, mode, out = sys.argv[1:4]
        res = sg.sweep(fn, pts, chunk_size=3, store=store, config={"case": "kill"},
                       resume=mode == "resume")
        np.savez(out, theta=res["theta"], r=res["stats"][0], d=res["stats"][1])
    """, steps=4000)
    store = tmp_path / "store"
    child = subprocess.Popen([sys.executable, str(script), str(store), "fresh",
                              str(tmp_path / "unused.npz")],
                             env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        if len(list(store.glob("chunk-*.npz"))) >= 2:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    child.wait(timeout=60)
    err = child.stderr.read()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL, err
    at_kill = files(store)
    chunks_at_kill = sorted(n for n in at_kill if n.startswith("chunk-"))
    assert 2 <= len(chunks_at_kill) < 16, chunks_at_kill

    resumed = subprocess.run([sys.executable, str(script), str(store), "resume",
                              str(tmp_path / "resumed.npz")], env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(chunks_at_kill)} of 16 chunks on disk" in resumed.stderr
    after = files(store)
    assert sorted(n for n in after if n.startswith("chunk-")) == [
        f"chunk-{k:05d}.npz" for k in range(16)]
    assert not [n for n in after if n.endswith(".tmp")]
    for name in chunks_at_kill:  # finished chunks were kept, not recomputed or rewritten
        assert after[name] == at_kill[name]
    for k in range(16):  # every point exactly once, in its chunk
        with np.load(store / f"chunk-{k:05d}.npz") as z:
            np.testing.assert_array_equal(z["indices"], np.arange(3 * k, 3 * k + 3))

    whole = subprocess.run([sys.executable, str(script), str(tmp_path / "whole"), "fresh",
                            str(tmp_path / "whole.npz")], env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "whole.npz")
    for key in ("theta", "r", "d"):
        np.testing.assert_array_equal(a[key], b[key])  # bit for bit


# ------------------------------------------------------------------------------------ CLI


SPEC = {
    "axes": {"beta_self": {"log": [0.01, 1.0, 3]}, "beta_cross": {"values": [0.1, 0.5]}},
    "model": {"sizes": [6, 6], "k": 2},
    "run": {"steps": 40, "transient": 20, "sample_every": 10, "chunk_size": 4,
            "float64": True, "metrics": ["order_parameter", "modality_attention"]},
}


def test_cli_sweep_writes_results_and_resumes(tmp_path, capsys):
    spec = tmp_path / "plane.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--quiet"]) == 0
    data = np.load(out / "sweep.npz")
    np.testing.assert_allclose(data["axis_beta_self"], [0.01, 0.1, 1.0])
    assert data["order_parameter"].shape == (3, 2, 2)
    assert data["modality_attention"].shape == (3, 2, 2, 2)
    p = data["modality_attention"]
    np.testing.assert_allclose(data["dominance"], np.log(p[..., 1, 0] / p[..., 0, 1]),
                               atol=1e-12)
    assert np.all((data["order_parameter"] > 0) & (data["order_parameter"] <= 1))
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["grid_shape"] == [3, 2] and meta["axis_order"] == ["beta_self", "beta_cross"]
    assert meta["run"]["steps"] == 40 and meta["metrics"]["dominance"]["shape"] == [3, 2]
    assert sorted(p.name for p in (out / "chunks").iterdir()) == [
        "chunk-00000.npz", "chunk-00001.npz", "manifest.json"]

    # the same numbers as the engine on the point function, point by point
    from surrogate.sweeping import SweepModel, load_spec, point_function

    checked = load_spec(spec)
    f = point_function(checked)
    one = f({"beta_self": jnp.asarray(0.1, F64), "beta_cross": jnp.asarray(0.5, F64)})
    np.testing.assert_allclose(data["order_parameter"][1, 1], one["order_parameter"], atol=1e-12)
    # and as an independent reference: sg.simulate's trajectory, states 30, 40, 50, 60 (every
    # 10th measured step after the 20 transient ones) averaged
    model = SweepModel(checked)
    B = sg.block_matrix(0.1, 0.5, 2, F64)
    sur = sg.replace(model.base, B=B, K=B)
    sampled = sg.simulate(sur, model.theta0, dt=0.01, n_steps=60, save_every=10).ys[3:]
    want = jax.vmap(sg.modality_attention, (0, None))(sampled, sur).mean(0)
    np.testing.assert_allclose(p[1, 1], want, atol=1e-12)
    want_r = jax.vmap(sg.order_parameter, (0, None))(sampled, sur).mean(0)
    np.testing.assert_allclose(data["order_parameter"][1, 1], want_r, atol=1e-12)

    with pytest.raises(SystemExit) as exc:  # results exist: needs --resume
        main(["sweep", str(spec), "--out", str(out), "--quiet"])
    assert exc.value.code == 2 and "pass --resume" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--out", str(out), "--quiet", "--resume"]) == 0
    np.testing.assert_array_equal(np.load(out / "sweep.npz")["dominance"], data["dominance"])

    changed = json.loads(json.dumps(SPEC))
    changed["run"]["steps"] = 60
    spec.write_text(json.dumps(changed))
    with pytest.raises(SystemExit) as exc:  # another configuration in the same store
        main(["sweep", str(spec), "--out", str(out), "--quiet", "--resume"])
    assert exc.value.code == 2 and "made by another configuration" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_processes(spec: Path, out: Path, *extra: str) -> list[subprocess.CompletedProcess]:
    """``xmodal sweep`` as 2 processes of 2 CPU devices each, coordinated over localhost."""
    port = _free_port()
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "xmodal.cli", "sweep", str(spec), "--out", str(out), *extra,
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return done


@pytest.mark.slow  # 25 s; the resume of a killed sweep is also checked by default (sigkill test)
def test_two_processes_sweep_like_one_and_resume(tmp_path):
    # jax.distributed with 2 processes x 2 CPU devices (gloo collectives): the grid is sharded
    # over 4 devices of 2 processes; process 0 alone decides on and writes the store.
    spec = tmp_path / "plane.json"
    spec.write_text(json.dumps(dict(SPEC, run=dict(SPEC["run"], chunk_size=2))))
    one = subprocess.run([sys.executable, "-m", "xmodal.cli", "sweep", str(spec), "--out",
                          str(tmp_path / "one"), "--quiet"], env=_env(
                             XLA_FLAGS="--xla_force_host_platform_device_count=1"),
                         capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr
    ref = np.load(tmp_path / "one/sweep.npz")

    out = tmp_path / "two"
    first = _two_processes(spec, out)
    assert [p.returncode for p in first] == [0, 0], [p.stderr[-2000:] for p in first]
    assert "on 4 cpu device(s)" in first[0].stderr and "sweep:" not in first[1].stderr
    assert "swept 6 points" in first[0].stdout and "swept" not in first[1].stdout
    two = dict(np.load(out / "sweep.npz"))
    for name in ("order_parameter", "modality_attention", "dominance"):
        np.testing.assert_allclose(two[name], ref[name], rtol=0, atol=1e-12)
    assert json.loads((out / "chunks/manifest.json").read_text())["n_devices"] == 4

    # a finished sweep without --resume: both processes refuse, none waits for the other
    again = _two_processes(spec, out)
    assert [p.returncode for p in again] == [2, 2]
    assert all("pass --resume" in p.stderr for p in again)

    # one chunk lost: the resumed run recomputes it alone and gives the same bits
    (out / "chunks/chunk-00001.npz").unlink()
    kept = {n: v for n, v in files(out / "chunks").items() if n != "manifest.json"}  # digests
    resumed = _two_processes(spec, out, "--resume")
    assert [p.returncode for p in resumed] == [0, 0], [p.stderr[-2000:] for p in resumed]
    assert "2 of 3 chunks on disk" in resumed[0].stderr
    after = files(out / "chunks")
    assert {n: after[n] for n in kept} == kept and "chunk-00001.npz" in after
    for name, x in np.load(out / "sweep.npz").items():
        np.testing.assert_array_equal(x, two[name])

    # process 0's verdict on a foreign store reaches process 1 (no hang, the same error)
    spec.write_text(json.dumps(dict(SPEC, run=dict(SPEC["run"], chunk_size=2, steps=60))))
    foreign = _two_processes(spec, out, "--resume")
    assert [p.returncode for p in foreign] == [2, 2]
    assert "made by another configuration" in foreign[0].stderr
    assert "process 0: SweepStoreError" in foreign[1].stderr
    assert "made by another configuration" in foreign[1].stderr


@pytest.mark.parametrize("anchored", [False, True], ids=["no anchoring", "anchor swept"])
def test_chunk_function_equals_point_function(tmp_path, anchored):
    """xmodal sweep's batched chunk function (points on the minor axis) against the per-point
    reference under vmap: every metric, every sweepable parameter, a Lorenz drive."""
    import dataclasses

    from lorenz.systems import lorenz63, rk4_trajectory
    from surrogate.sweeping import (
        SweepModel,
        chunk_function,
        load_spec,
        point_function,
        sweep_function,
    )

    spec_file = tmp_path / "all.json"
    spec_file.write_text(json.dumps({
        "axes": {"beta_self": {"values": [0.2, 1.0]}, "kappa_cross": {"values": [0.05, 0.8]},
                 "omega_spread": {"values": [0.5, 1.5]}, "gain": {"values": [0.3, 2.0]},
                 **({"anchor": {"values": [0.5, 3.0]}} if anchored else {})},
        "model": {"sizes": [6, 8], "k": 2, "beta_cross": 0.3},
        "run": {"steps": 30, "transient": 10, "sample_every": 3, "float64": True,
                "field": "sparse", "drive": "lorenz",
                "metrics": ["order_parameter", "modality_attention", "lyapunov"]},
    }))
    spec = load_spec(spec_file)
    assert spec.anchored == anchored
    ys = rk4_trajectory(lorenz63, jnp.ones(3, F64), dt=spec.run.dt,
                        n_steps=spec.run.drive_samples - 1, transient=500).ys
    model = SweepModel(spec, ys[:, :2])
    assert model.params({"beta_self": 0.2}).anchored == anchored
    pts = sg.grid(**spec.axis_values)
    batch = sg.sweep(chunk_function(model), pts, chunk_size=5, batched=True, progress=False)
    ref = sg.sweep(point_function(model), pts, chunk_size=5, progress=False)
    assert set(batch) == set(ref) == {"order_parameter", "order_parameter_final", "lyapunov",
                                      "modality_attention", "cross_share", "dominance"}
    for name in ref:
        assert batch[name].shape == ref[name].shape
        np.testing.assert_allclose(batch[name], ref[name], rtol=0, atol=1e-11, err_msg=name)
    assert np.ptp(ref["dominance"]) > 1e-3 and np.ptp(ref["lyapunov"]) > 1e-3  # points differ
    assert sweep_function(model)[1]  # sparse: the batched path
    dense = dataclasses.replace(spec, run=dataclasses.replace(spec.run, field="dense"))
    assert not sweep_function(SweepModel(dense, ys[:, :2]))[1]
    with pytest.raises(ValueError, match=r"all\.json: field 'run\.drive': 'lorenz' needs the "
                                         r"drive samples"):
        SweepModel(spec)


def test_anchored_sweep_exponent_is_the_locking_rate(tmp_path):
    """Uncoupled (K = 0), undriven, anchored: each oscillator locks at rate
    sqrt(h^2 - omega_i^2), so the sweep's lyapunov metric is -min_i sqrt(h^2 - omega_i^2) at
    every anchor strength of the axis (h > max |omega_i|), up to the random start frame's bias,
    about log(sqrt(N)) / T (0.017 here)."""
    from surrogate.sweeping import SweepModel, load_spec

    spec_file = tmp_path / "anchor.json"
    spec_file.write_text(json.dumps({
        "axes": {"anchor": {"values": [3.5, 5.0]}},
        "model": {"sizes": [6, 8], "k": 2, "kappa_self": 0.0, "kappa_cross": 0.0},
        "run": {"steps": 8000, "transient": 500, "sample_every": 10, "float64": True,
                "metrics": ["lyapunov"]},
    }))
    spec = load_spec(spec_file)
    model = SweepModel(spec)
    omega = np.asarray(model.base.params.omega)
    hs = spec.axis_values["anchor"]
    assert np.abs(omega).max() < hs.min()
    _, out = sg.sweeping.run_spec(spec, progress=False)
    want = -np.sqrt(hs[:, None] ** 2 - omega[None] ** 2).min(1)
    np.testing.assert_allclose(out["lyapunov"], want, rtol=1e-2)


def test_cli_toml_spec(tmp_path):
    spec = tmp_path / "plane.toml"
    spec.write_text(textwrap.dedent("""
        [axes]
        beta_cross = { linear = [0.0, 1.0, 3] }
        [model]
        sizes = [6, 6]
        k = 2
        beta_self = 0.5
        [run]
        steps = 20
        transient = 0
        sample_every = 5
        metrics = ["order_parameter"]
    """))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    data = np.load(tmp_path / "o/sweep.npz")
    assert set(data.files) == {"axis_beta_cross", "order_parameter", "order_parameter_final"}
    assert data["order_parameter"].shape == (3, 2)


@pytest.mark.parametrize("patch, message", [
    ({"axes": {}}, "field 'axes': must name at least one axis"),
    ({"axes": {"k": {"values": [2]}}}, "field 'axes.k': cannot be swept"),
    ({"axes": {"beta_self": {"log": [0.0, 1.0, 3]}}}, "field 'axes.beta_self.log[0]': must be "
                                                      "positive"),
    ({"axes": {"beta_self": {"log": [0.1, 1.0]}}}, "field 'axes.beta_self.log': must be "
                                                   "[start, stop, count]"),
    ({"axes": {"beta_self": {"grid": [1]}}}, "field 'axes.beta_self': must be exactly one of"),
    ({"run": {"steps": -5}}, "field 'run.steps': must be an integer >= 1, got -5"),
    ({"run": {"steps": 45}}, "field 'run.steps': must be a multiple of run.sample_every=10"),
    ({"run": {"dt": "fast"}}, "field 'run.dt': must be a finite number, got 'fast'"),
    ({"run": {"metrics": ["nmse"]}}, "field 'run.metrics': must be a non-empty list"),
    ({"run": {"stepz": 5}}, "field 'run.stepz': unknown field"),
    ({"model": {"sizes": [6]}}, "field 'model.sizes': must be two integers >= 2"),
    ({"model": {"k": 3}}, "field 'model.k': must be even"),
    ({"model": {"normalisation": "l2"}}, "field 'model.normalisation'"),
    ({"model": {"anchor": -1.0}}, "field 'model.anchor': must be >= 0.0, got -1.0"),
    ({"axes": {"anchor": {"values": [1.0, -2.0]}}}, "field 'axes.anchor.values[1]': must be "
                                                    ">= 0.0, got -2.0"),
])
def test_cli_rejects_bad_spec_fields(tmp_path, capsys, patch, message):
    spec = json.loads(json.dumps(SPEC))
    for section, fields in patch.items():
        spec[section] = fields if section == "axes" else {**spec[section], **fields}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"{path}: {message}" in err, err
    assert not (tmp_path / "o").exists()  # checked before anything is written


@pytest.mark.parametrize("flags,message", [
    (["--num-processes", "2", "--process-id", "2"], "--process-id must be in 0 .."),
    (["--num-processes", "0"], "argument --num-processes: must be >= 1"),
    (["--num-processes", "2", "--process-id", "1"], "cannot start the multi-host run"),
])
def test_cli_rejects_bad_multihost_flags(tmp_path, capsys, flags, message):
    spec = tmp_path / "plane.json"
    spec.write_text(json.dumps(SPEC))
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet", *flags])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


def test_cli_rejects_unreadable_spec_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[axes\nbeta_self = 1")
    for path, message in ((bad, f"{bad}: not valid TOML"),
                          (tmp_path / "spec.yaml", "spec file must end in .json or .toml"),
                          (tmp_path / "missing.json", "cannot read spec file")):
        proc = subprocess.run([sys.executable, "-m", "xmodal.cli", "sweep", str(path), "--out",
                               str(tmp_path / "o")], capture_output=True, text=True, env=_env())
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


# ------------------------------------------- the fast path's evaluation and loop structure


def test_loop_structure_variants_integrate_the_same(monkeypatch):
    """Unrolled stages and several steps per scan iteration (benchmark variants) change nothing
    but rounding: same trajectory in float64, same fold accumulation."""
    sur = ns["SUR"]
    point = {"beta_self": jnp.asarray(0.7), "beta_cross": jnp.asarray(0.2)}
    B = sg.block_matrix(point["beta_self"], point["beta_cross"], 2, F64)
    sur = sg.replace(sur, B=B, K=B)

    def run(solver):
        traj = sg.simulate(sur, ns["THETA0"], dt=0.01, n_steps=90, save_every=30,
                           field="sparse", solver=solver)
        acc = sg.fold(sur, ns["THETA0"], jnp.zeros(12, F64), lambda a, n, th: a + jnp.cos(th),
                      dt=0.01, n_steps=90, field="sparse", solver=solver).acc
        return traj.ys, acc

    base = run(sg.FixedStep())
    for loop, unroll in ((False, 1), (True, 4), (False, 7)):
        for x, y in zip(run(sg.FixedStep(stage_loop=loop, unroll=unroll)), base, strict=True):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-12)
