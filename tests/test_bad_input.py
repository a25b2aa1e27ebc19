"""Every subcommand under bad and extreme input, as a hostile user would try it.

Each case asserts: the exit code (2 for a refused input, 0 where the input is legal but the result
diverges), a one-line message naming the argument, no traceback, no hang (every process has a
timeout), outputs that existed untouched, nothing created by a failed command, and strict JSON
(``json.load`` with ``parse_constant`` raising, i.e. no NaN/Infinity) in every JSON file and JSON
output of the runs that succeed.

Most cases run in one driver process (``xmodal.cli.main`` called per case, the console script's
own entry point; the JAX import and compilations are paid once); the cases that change the
process (a JAX platform, a long run killed after its estimate) run in their own.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_files import strict_load, write_bundle

#: (id, argv, expected exit code, fragment of stderr; checks: "untouched" (a path whose tree
#: must not change), "absent" (a path that must not exist afterwards), "json" (files that must
#: parse strictly), "stdout_json" (stdout must parse strictly), "nonfinite" (the JSON must record
#: non-finite values under "non_finite" and stderr must warn), "warns" (a fragment of stderr)).
CASES = [
    # ------------------------------------------------------------------------ simulate
    dict(id="simulate-nan-beta", argv="simulate --beta-self nan --out {tmp}/s1", code=2,
         msg="argument --beta-self: must be finite", absent="{tmp}/s1"),
    dict(id="simulate-1e9-time-units", argv="simulate --duration 1e9 --out {tmp}/s2", code=2,
         msg="--duration 1000000000.0 / --dt 0.01 gives 1e+11 steps", absent="{tmp}/s2"),
    dict(id="simulate-huge-sizes", argv="simulate --sizes 2000000,2000000 --out {tmp}/s3",
         code=2, msg="of memory, more than this machine has available", absent="{tmp}/s3"),
    dict(id="simulate-huge-seed", argv="simulate --seed 99999999999999999999 --out {tmp}/s4",
         code=2, msg="argument --seed: must be in -2**63 .. 2**63 - 1", absent="{tmp}/s4"),
    dict(id="simulate-out-not-empty", argv="simulate --duration 0.2 --out {tmp}/keep", code=2,
         msg="--out {tmp}/keep: exists and is not empty; pass --force", untouched="{tmp}/keep"),
    dict(id="simulate-out-is-a-file", argv="simulate --duration 0.2 --out {tmp}/afile", code=2,
         msg="--out {tmp}/afile: exists and is not a directory", untouched="{tmp}/afile"),
    dict(id="simulate-out-under-a-file", argv="simulate --duration 0.2 --out {tmp}/afile/sub",
         code=2, msg="is not a directory", untouched="{tmp}/afile"),
    dict(id="simulate-out-unwritable", argv="simulate --duration 0.2 --out /proc/sys --force",
         code=2, msg="--out /proc/sys: cannot write there"),
    dict(id="simulate-sizes-below-degree", argv="simulate --sizes 4,4 --out {tmp}/s5/deep",
         code=2, msg="--sizes 4,4: each modality needs more than 10 oscillators",
         absent="{tmp}/s5"),
    dict(id="simulate-divergent", argv="simulate --beta-self 1e30 --beta-cross=-1e30 "
         "--omega-spread 1e30 --sizes 12,12 --duration 1 --dt 0.1 --save-every 1 "
         "--out {tmp}/sdiv", code=0, json=["{tmp}/sdiv/metrics.json"], nonfinite=True),
    dict(id="simulate-force", argv="simulate --sizes 12,12 --duration 0.2 --dt 0.1 "
         "--save-every 1 --out {tmp}/keep2 --force", code=0, json=["{tmp}/keep2/metrics.json"]),
    # ------------------------------------------------------------------------ lyapunov
    dict(id="lyapunov-plot-is-a-dir", argv="lyapunov --steps 100 --plot {tmp}", code=2,
         msg="--plot {tmp}: is a directory"),
    dict(id="lyapunov-plot-no-folder", argv="lyapunov --steps 100 --plot {tmp}/no/x.png",
         code=2, msg="--plot {tmp}/no/x.png: folder {tmp}/no does not exist"),
    dict(id="lyapunov-plot-unwritable", argv="lyapunov --steps 100 --plot /proc/x.png",
         code=2, msg="--plot /proc/x.png: cannot write in /proc"),
    dict(id="lyapunov-float32-too-many-steps",
         argv="lyapunov --float32 --steps 3000000000", code=2,
         msg="--steps + --transient (with --float32) gives 3e+09 steps"),
    dict(id="lyapunov-henon-dt", argv="lyapunov --system henon --dt 0.1", code=2,
         msg="--dt: the Henon map has no time step"),
    dict(id="lyapunov-huge-seed", argv="lyapunov --system surrogate --seed -99999999999999999999",
         code=2, msg="argument --seed"),
    dict(id="lyapunov-huge-drive", argv="lyapunov --system surrogate --steps 100000000000000",
         code=2, msg="with --drive lorenz (a tabulated drive) needs about"),
    dict(id="lyapunov-huge-surrogate", argv="lyapunov --system surrogate --sizes 2000000,2000000",
         code=2, msg="--sizes 2000000,2000000 (4000000 oscillators) needs about"),
    dict(id="lyapunov-divergent-json", argv="lyapunov --param rho=1e6 --steps 2000 --json",
         code=0, stdout_json=True, nonfinite=True),
    dict(id="lyapunov-divergent-surrogate-json",
         argv="lyapunov --system surrogate --beta-self 1e30 --beta-cross=-1e30 "
         "--omega-spread 1e30 --sizes 6,6 --degree 2 --steps 50 --transient 0 --json "
         "--drive none", code=0, stdout_json=True),
    # ------------------------------------------------------------------------ sweep
    dict(id="sweep-1e12-points", argv="sweep {tmp}/huge.json --out {tmp}/w1", code=2,
         msg="the grid of 1e+12 points (axes 1000000 x 1000000) needs about",
         absent="{tmp}/w1"),
    dict(id="sweep-huge-axis", argv="sweep {tmp}/huge_axis.json --out {tmp}/w1b", code=2,
         msg="field 'axes.beta_self.linear[2]' (1000000000000000 values) needs about",
         absent="{tmp}/w1b"),
    dict(id="sweep-huge-seed", argv="sweep {tmp}/seed.json --out {tmp}/w2", code=2,
         msg="field 'run.seed': must be < 2**63", absent="{tmp}/w2"),
    dict(id="sweep-port-out-of-range",
         argv="sweep {tmp}/small.json --out {tmp}/w3 --coordinator 127.0.0.1:99999 "
         "--num-processes 2 --process-id 1", code=2,
         msg="--coordinator '127.0.0.1:99999': port must be an integer in 1..65535",
         absent="{tmp}/w3"),
    dict(id="sweep-unresolvable-host",
         argv="sweep {tmp}/small.json --out {tmp}/w4 --coordinator no-such-host.invalid:1234 "
         "--num-processes 2 --process-id 1", code=2, msg="does not resolve", absent="{tmp}/w4"),
    dict(id="sweep-no-coordinator-listening",
         argv="sweep {tmp}/small.json --out {tmp}/w5 --coordinator 127.0.0.1:{port} "
         "--num-processes 2 --process-id 1 --start-timeout 2", code=2,
         msg="no coordinator (process 0) accepts connections there after 2 s",
         absent="{tmp}/w5"),
    dict(id="sweep-multihost-start-fails",
         argv="sweep {tmp}/small.json --out {tmp}/w6 --num-processes 2 --process-id 1",
         code=2, msg="cannot start the multi-host run", absent="{tmp}/w6"),
    dict(id="sweep-out-not-empty", argv="sweep {tmp}/small.json --out {tmp}/keep", code=2,
         msg="exists and is not empty; pass --resume to continue the run in it or --force",
         untouched="{tmp}/keep"),
    dict(id="sweep-out-unwritable", argv="sweep {tmp}/small.json --out /proc/xmodal-sweep",
         code=2, msg="--out /proc/xmodal-sweep: cannot write in /proc"),
    dict(id="sweep-divergent", argv="sweep {tmp}/divergent.json --out {tmp}/wdiv --quiet",
         code=0, json=["{tmp}/wdiv/sweep.json"],
         warns="sweep.npz: non-finite values (NaN/inf) in"),
    dict(id="sweep-force-over-a-sweep",
         argv="sweep {tmp}/small.json --out {tmp}/wdiv --quiet --force", code=0,
         json=["{tmp}/wdiv/sweep.json"]),
    dict(id="sweep-resume-another-configuration",
         argv="sweep {tmp}/small20.json --out {tmp}/wdiv --quiet --resume", code=2,
         msg="made by another configuration; differs in config (config.run.steps: store 10, "
         "now 20)"),
    # ------------------------------------------------------------------------ fit
    dict(id="fit-no-bundle", argv="fit {tmp}/none.bundle --out {tmp}/f1", code=2,
         msg="BUNDLE {tmp}/none.bundle: no such file", absent="{tmp}/f1"),
    dict(id="fit-garbage-bundle", argv="fit {tmp}/garbage.bundle --out {tmp}/f2/deep", code=2,
         msg="{tmp}/garbage.bundle", absent="{tmp}/f2"),
    dict(id="fit-out-not-empty", argv="fit {tmp}/b.bundle --out {tmp}/keep", code=2,
         msg="--out {tmp}/keep: exists and is not empty; pass --force", untouched="{tmp}/keep"),
    dict(id="fit-1e9-steps", argv="fit {tmp}/b.bundle --out {tmp}/f3 --horizon 1e9", code=2,
         msg="--horizon 1000000000.0 / --dt 0.05 gives 2e+10 steps", absent="{tmp}/f3"),
    dict(id="fit-huge-model", argv="fit {tmp}/b.bundle --out {tmp}/f4 --n-total 10000000",
         code=2, msg="10000000 oscillators x --restarts 4 x --realizations 4 x --initial 1",
         absent="{tmp}/f4"),
    dict(id="fit-one-restart", argv="fit {tmp}/b.bundle --out {tmp}/f5 --restarts 1 --steps 3 "
         "--n-total 8 --k 2 --polish-steps 0 --initial 1 --horizon 1 --dt 0.1 --held-out 0 "
         "--realizations 2", code=0,
         json=["{tmp}/f5/params.json"]),
    # ------------------------------------------------------------------------ sensitivity
    dict(id="sensitivity-not-json", argv="sensitivity {tmp}/notjson.json --out {tmp}/e1",
         code=2, msg="PARAMS.json {tmp}/notjson.json: not valid JSON", absent="{tmp}/e1"),
    dict(id="sensitivity-out-not-empty", argv="sensitivity --preset paper --out {tmp}/keep",
         code=2, msg="exists and is not empty; pass --force", untouched="{tmp}/keep"),
    dict(id="sensitivity-3e9-steps",
         argv="sensitivity --preset paper --steps 3000000000 --out {tmp}/e2", code=2,
         msg="--steps 3000000000 gives 3e+09 steps", absent="{tmp}/e2"),
    dict(id="sensitivity-huge-seed",
         argv="sensitivity --preset paper --seed 99999999999999999999 --out {tmp}/e3", code=2,
         msg="argument --seed", absent="{tmp}/e3"),
    dict(id="sensitivity-divergent",
         argv="sensitivity --preset paper --beta-self 1e30 --beta-cross=-1e30 --no-shapley "
         "--balance-steps 0 --steps 20 --burn 10 --out {tmp}/ediv", code=0,
         json=["{tmp}/ediv/sensitivity.json"], nonfinite=True),
    # ------------------------------------------------------------------------ lorenz
    dict(id="lorenz-huge-grid", argv="lorenz --grid 10000000 --out {tmp}/l1", code=2,
         msg="--grid 10000000 (100000000000000 points) needs about", absent="{tmp}/l1"),
    dict(id="lorenz-out-not-empty", argv="lorenz --grid 2 --out {tmp}/keep", code=2,
         msg="pass --resume to continue the run in it or --force", untouched="{tmp}/keep"),
    dict(id="lorenz-out-is-a-file", argv="lorenz --grid 2 --out {tmp}/afile", code=2,
         msg="exists and is not a directory", untouched="{tmp}/afile"),
    dict(id="lorenz-huge-seed", argv="lorenz --seed 99999999999999999999 --out {tmp}/l2",
         code=2, msg="argument --seed", absent="{tmp}/l2"),
    # ------------------------------------------------------------------------ probe, emotion
    dict(id="probe-out-folder-missing",
         argv="probe --model {tmp} --prompt hi --out {tmp}/no/x.bundle", code=2,
         msg="--out: folder"),
    dict(id="probe-audio-missing",
         argv="probe --model {tmp} --prompt hi --audio {tmp}/no.wav --out {tmp}/x.bundle",
         code=2, msg="--audio: file"),
    dict(id="probe-no-such-device",
         argv="probe --model {tmp} --prompt hi --out {tmp}/x.bundle --device abacus", code=2,
         msg="--device 'abacus': not a torch device", absent="{tmp}/x.bundle"),
    dict(id="probe-device-not-here",
         argv="probe --model {tmp} --prompt hi --out {tmp}/x.bundle --device mps", code=2,
         msg="--device mps: not available here", absent="{tmp}/x.bundle"),
    dict(id="emotion-data-missing", argv="emotion --data {tmp}/no --model {tmp} --out {tmp}/m1",
         code=2, msg="--data: folder", absent="{tmp}/m1"),
    dict(id="emotion-limit-zero",
         argv="emotion --data {tmp} --model {tmp} --out {tmp}/m2 --limit 0", code=2,
         msg="argument --limit", absent="{tmp}/m2"),
    # ------------------------------------------------------------------------ issue 27
    # spec files: depth, duplicates, encoding, directories, drive memory, the spec as output
    dict(id="sweep-deep-json", argv="sweep {tmp}/deep.json --out {tmp}/h1", code=2,
         msg="{tmp}/deep.json: nested 100001 levels deep", absent="{tmp}/h1"),
    dict(id="sweep-deep-toml", argv="sweep {tmp}/deep.toml --out {tmp}/h2", code=2,
         msg="{tmp}/deep.toml: nested 100000 levels deep", absent="{tmp}/h2"),
    dict(id="sweep-axis-twice-json", argv="sweep {tmp}/twice.json --out {tmp}/h3", code=2,
         msg="{tmp}/twice.json: field 'beta_cross' given twice", absent="{tmp}/h3"),
    dict(id="sweep-axis-twice-toml", argv="sweep {tmp}/twice.toml --out {tmp}/h3b", code=2,
         msg="{tmp}/twice.toml: not valid TOML", absent="{tmp}/h3b"),
    dict(id="sweep-spec-not-utf8", argv="sweep {tmp}/latin1.json --out {tmp}/h4", code=2,
         msg="{tmp}/latin1.json: not UTF-8 text (byte 0xea on line 1)", absent="{tmp}/h4"),
    dict(id="sweep-spec-too-large", argv="sweep {tmp}/big.json --out {tmp}/h4b", code=2,
         msg="{tmp}/big.json: 68157440 bytes, more than the 67108864 bytes an input file may "
         "have", absent="{tmp}/h4b"),
    dict(id="sweep-spec-is-a-directory", argv="sweep {tmp}/adir.json --out {tmp}/h5", code=2,
         msg="{tmp}/adir.json: is a directory", absent="{tmp}/h5"),
    dict(id="sweep-drive-too-long", argv="sweep {tmp}/longdrive.json --out {tmp}/h6", code=2,
         msg="field 'run.steps' = 2000000000 (+ run.transient 0) with run.drive = 'lorenz'",
         absent="{tmp}/h6"),
    dict(id="sweep-out-holds-the-spec", argv="sweep {tmp}/sp/sweep.json --out {tmp}/sp --force",
         code=2, msg="--out {tmp}/sp/sweep.json: is the input of SPEC", untouched="{tmp}/sp"),
    dict(id="sweep-resume-while-locked", argv="sweep {tmp}/small.json --out {tmp}/wlock "
         "--resume", code=2, msg="--out {tmp}/wlock: another xmodal process (pid",
         untouched="{tmp}/wlock"),
    dict(id="sweep-force-while-locked", argv="sweep {tmp}/small.json --out {tmp}/wlock "
         "--force", code=2, msg="--force does not delete a folder in use",
         untouched="{tmp}/wlock"),
    dict(id="sweep-out-long-name", argv="sweep {tmp}/small.json --out {tmp}/" + "d" * 300,
         code=2, msg="a name in it has 300 bytes, more than the 255"),
    # params files of sensitivity: depth, encoding, fields named
    dict(id="sensitivity-deep-params", argv="sensitivity {tmp}/pdeep.json --out {tmp}/q1",
         code=2, msg="PARAMS.json {tmp}/pdeep.json: nested 100000 levels deep",
         absent="{tmp}/q1"),
    dict(id="sensitivity-params-not-utf8", argv="sensitivity {tmp}/platin1.json --out {tmp}/q2",
         code=2, msg="PARAMS.json {tmp}/platin1.json: not UTF-8 text", absent="{tmp}/q2"),
    dict(id="sensitivity-seed-1e400", argv="sensitivity {tmp}/pseed.json --out {tmp}/q3",
         code=2, msg="PARAMS.json {tmp}/pseed.json: field 'seed': must be an integer",
         absent="{tmp}/q3"),
    dict(id="sensitivity-negative-key", argv="sensitivity {tmp}/pkey.json --out {tmp}/q4",
         code=2, msg="PARAMS.json {tmp}/pkey.json: field 'key': must be a list of integers in "
         "0 .. 2**32 - 1", absent="{tmp}/q4"),
    dict(id="sensitivity-nan-B", argv="sensitivity {tmp}/pnan.json --out {tmp}/q5", code=2,
         msg="PARAMS.json {tmp}/pnan.json: field 'params.B': holds non-finite values",
         absent="{tmp}/q5"),
    dict(id="sensitivity-B-wrong-shape", argv="sensitivity {tmp}/pshape.json --out {tmp}/q6",
         code=2, msg="field 'params.B': expected shape (2, 2), got shape (3,)",
         absent="{tmp}/q6"),
    dict(id="sensitivity-params-is-a-directory", argv="sensitivity {tmp}/adir.json "
         "--out {tmp}/q7", code=2, msg="PARAMS.json {tmp}/adir.json: is a directory",
         absent="{tmp}/q7"),
    dict(id="sensitivity-params-duplicate-key", argv="sensitivity {tmp}/pdup.json "
         "--out {tmp}/q8", code=2, msg="field 'seed' given twice", absent="{tmp}/q8"),
    dict(id="sensitivity-huge-sizes", argv="sensitivity {tmp}/phuge.json --out {tmp}/q10",
         code=2, msg="PARAMS.json {tmp}/phuge.json: field 'surrogate.sizes' (2000000 "
         "oscillators) needs about", absent="{tmp}/q10"),
    dict(id="sensitivity-bad-sizes", argv="sensitivity {tmp}/psizes.json --out {tmp}/q9",
         code=2, msg="field 'surrogate.sizes': must be >= 2 integers", absent="{tmp}/q9"),
    # lyapunov: options named, figure checked first, closed stdout, first line at once
    dict(id="lyapunov-odd-degree", argv="lyapunov --system surrogate --sizes 6,6 --degree 3",
         code=2, msg="--degree 3: the Watts-Strogatz degree must be even"),
    dict(id="lyapunov-plot-unknown-format", argv="lyapunov --steps 100 --plot {tmp}/x.xyz",
         code=2, msg="--plot {tmp}/x.xyz: unknown figure format 'xyz'", absent="{tmp}/x.xyz"),
    dict(id="lyapunov-plot-device-node", argv="lyapunov --steps 100 --plot /dev/null", code=2,
         msg="--plot /dev/null: exists and is not a regular file"),
    dict(id="lyapunov-plot-name-too-long",
         argv="lyapunov --steps 100 --plot {tmp}/" + "p" * 300 + ".png", code=2,
         msg="--plot {tmp}/ppp", warns="a name in it has 304 bytes, more than the 255"),
    dict(id="lyapunov-stdout-closed", argv="lyapunov --system henon --steps 100 --json",
         code=2, stdout="closed", msg="standard output is closed"),
    dict(id="lyapunov-first-line", argv="lyapunov --system henon --steps 100 --transient 10",
         code=0, warns="lyapunov: henon, 110 steps (transient 10); compiling"),
    # simulate: device node and long names as --out
    dict(id="simulate-out-device-node", argv="simulate --duration 0.2 --out /dev/null", code=2,
         msg="--out /dev/null: exists and is not a directory"),
    dict(id="simulate-out-name-too-long", argv="simulate --duration 0.2 --out {tmp}/"
         + "s" * 300 + "/x", code=2, msg="a name in it has 300 bytes"),
    # fit: options named, not FitConfig fields; a directory as a bundle
    dict(id="fit-sizes-per-modality", argv="fit {tmp}/b.bundle --out {tmp}/g1 --sizes 10,10,10",
         code=2, msg="--sizes 10,10,10: give one size per --modalities entry (audio, vision)",
         absent="{tmp}/g1"),
    dict(id="fit-horizon-not-a-multiple", argv="fit {tmp}/b.bundle --out {tmp}/g2 --horizon 1 "
         "--dt 0.3", code=2, msg="--horizon 1.0 must be a multiple (>= 2) of --dt 0.3",
         absent="{tmp}/g2"),
    dict(id="fit-odd-k", argv="fit {tmp}/b.bundle --out {tmp}/g3 --k 3", code=2,
         msg="--k 3: the Watts-Strogatz degree must be even", absent="{tmp}/g3"),
    dict(id="fit-huge-sizes", argv="fit {tmp}/b.bundle --out {tmp}/g4 "
         "--sizes 10000000,10000000", code=2, msg="20000000 oscillators x --restarts 4",
         absent="{tmp}/g4"),
    dict(id="fit-bundle-is-a-directory", argv="fit {tmp}/adir.json --out {tmp}/g5", code=2,
         msg="BUNDLE {tmp}/adir.json: is a directory, not a bundle file", absent="{tmp}/g5"),
    # probe: outputs checked before the model is loaded
    dict(id="probe-out-is-the-input", argv="probe --model {tmp} --prompt hi "
         "--audio {tmp}/clip.wav --out {tmp}/clip.wav", code=2,
         msg="--out {tmp}/clip.wav: is the input of --audio", untouched="{tmp}/clip.wav"),
    dict(id="probe-figure-is-the-input", argv="probe --model {tmp} --prompt hi "
         "--image {tmp}/pic.png --out {tmp}/pic.bundle --figure", code=2,
         msg="--figure {tmp}/pic.png: is the input of --image",
         untouched="{tmp}/pic.png", absent="{tmp}/pic.bundle"),
    dict(id="probe-out-is-a-directory", argv="probe --model {tmp} --prompt hi "
         "--audio {tmp}/clip.wav --out {tmp}/adir.json", code=2,
         msg="--out {tmp}/adir.json: is a directory", untouched="{tmp}/adir.json"),
    dict(id="probe-out-device-node", argv="probe --model {tmp} --prompt hi "
         "--audio {tmp}/clip.wav --out /dev/null", code=2,
         msg="--out /dev/null: exists and is not a regular file"),
    dict(id="probe-out-name-too-long", argv="probe --model {tmp} --prompt hi "
         "--audio {tmp}/clip.wav --out {tmp}/" + "b" * 300, code=2,
         msg="--out {tmp}/bbb", warns="a name in it has 300 bytes"),
    dict(id="probe-manifest-not-utf8", argv="probe --model {tmp} --manifest {tmp}/latin1.csv "
         "--out-dir {tmp}/pd --prompt hi", code=2,
         msg="manifest '{tmp}/latin1.csv' line 3: not UTF-8 text (byte 0xe9)",
         absent="{tmp}/pd"),
    dict(id="probe-out-dir-is-a-file", argv="probe --model {tmp} --manifest {tmp}/ok.csv "
         "--out-dir {tmp}/afile --prompt hi", code=2,
         msg="--out-dir {tmp}/afile: exists and is not a directory", untouched="{tmp}/afile"),
    # the backend and XLA_FLAGS, tried in a child process before --out exists
    dict(id="cuda-simulate", group="cuda", argv="simulate --duration 0.2 --out {tmp}/c1",
         code=2, msg="environment variable JAX_PLATFORMS='cuda': JAX cannot start",
         absent="{tmp}/c1"),
    dict(id="cuda-sweep", group="cuda", argv="sweep {tmp}/small.json --out {tmp}/c2", code=2,
         msg="JAX_PLATFORMS='cuda'", absent="{tmp}/c2"),
    dict(id="cuda-sensitivity", group="cuda", argv="sensitivity --preset paper --out {tmp}/c3",
         code=2, msg="JAX_PLATFORMS='cuda'", absent="{tmp}/c3"),
    dict(id="cuda-lyapunov", group="cuda", argv="lyapunov --system henon --steps 100",
         code=2, msg="JAX_PLATFORMS='cuda'"),
    dict(id="xla-simulate", group="xla", argv="simulate --duration 0.2 --out {tmp}/x1",
         code=2, msg="environment variable XLA_FLAGS='--nonsense': XLA cannot start with it "
         "(Unknown flag in XLA_FLAGS: --nonsense)", absent="{tmp}/x1"),
    dict(id="xla-sweep", group="xla", argv="sweep {tmp}/small.json --out {tmp}/x2", code=2,
         msg="XLA_FLAGS='--nonsense'", absent="{tmp}/x2"),
    dict(id="xla-lyapunov", group="xla", argv="lyapunov --system henon --steps 100", code=2,
         msg="XLA_FLAGS='--nonsense'"),
]

DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys, traceback
    from xmodal.cli import main
    cases = json.load(open(sys.argv[1]))
    results = {}
    for case in cases:
        out, err = io.StringIO(), io.StringIO()
        stdout = None if case.get("stdout") == "closed" else out  # as Python sets it then
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(err):
            try:
                code = main(case["argv"])
            except SystemExit as exc:
                code = exc.code
            except BaseException:
                code = "escaped"
                err.write(traceback.format_exc())
        results[case["id"]] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
        with open(sys.argv[2], "w") as f:
            json.dump(results, f)
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ, **{"XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                              "PYTHONUNBUFFERED": "1", **extra})
    env.pop("XMODAL_TRACEBACK", None)
    return env


def _snapshot(path: Path):
    if path.is_file():
        return path.read_bytes()
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else None)
                  for p in path.rglob("*"))


def _setup(tmp: Path) -> None:
    (tmp / "keep").mkdir()
    (tmp / "keep" / "keep.txt").write_text("keep me")
    (tmp / "keep2").mkdir()
    (tmp / "keep2" / "other.txt").write_text("not ours")
    (tmp / "afile").write_text("a file")
    (tmp / "garbage.bundle").write_bytes(b"\x00garbage" * 10)
    (tmp / "notjson.json").write_text("{beta: NaN")
    write_bundle(tmp / "b.bundle")
    small = {"model": {"sizes": [4, 4], "k": 2},
             "run": {"steps": 10, "transient": 0, "sample_every": 5, "metrics":
                     ["order_parameter", "modality_attention"]}}
    specs = {
        "small": dict(small, axes={"beta_cross": {"values": [0.1, 0.5]}}),
        "small20": dict(small, axes={"beta_cross": {"values": [0.1, 0.5]}},
                        run=dict(small["run"], steps=20)),
        "huge": dict(small, axes={"beta_self": {"linear": [0.0, 1.0, 10**6]},
                                  "beta_cross": {"linear": [0.0, 1.0, 10**6]}}),
        "huge_axis": dict(small, axes={"beta_self": {"linear": [0.0, 1.0, 10**15]}}),
        "seed": dict(small, axes={"beta_cross": {"values": [0.1]}},
                     run=dict(small["run"], seed=2**64)),
        "divergent": {"axes": {"beta_self": {"values": [1e30, -1e30]}},
                      "model": {"sizes": [6, 6], "k": 2, "omega_spread": 1e30},
                      "run": dict(small["run"], steps=20)},
    }
    for name, spec in specs.items():
        (tmp / f"{name}.json").write_text(json.dumps(spec))
    _setup_issue27(tmp, small)


#: A params.json of a fit (the fields model_from_json reads), for the sensitivity cases.
PARAMS = {"format": "xmodal-fit", "seed": 0, "modalities": ["audio", "vision"],
          "surrogate": {"sizes": [12, 12], "k": 2, "p": 0.01, "cross_density": 0.15,
                        "normalisation": "softmax", "n_initial": 1, "horizon": 1.0, "dt": 0.1},
          "params": {"B": [[1.0, 0.1], [0.1, 1.0]], "K": [[1.0, 0.1], [0.1, 1.0]],
                     "omega_spread": 0.5, "gain": [1.0, 1.0], "times": [0.5, 1.0]}}


def _setup_issue27(tmp: Path, small: dict) -> None:
    deep = 100_000
    (tmp / "deep.json").write_text('{"axes": ' + "[" * deep + "]" * deep + "}")
    (tmp / "deep.toml").write_text("axes = " + "[" * deep + "]" * deep + "\n")
    (tmp / "pdeep.json").write_text("[" * deep + "]" * deep)
    axis = '{"values": [0.1, 0.5]}'
    (tmp / "twice.json").write_text(f'{{"axes": {{"beta_cross": {axis}, "beta_cross": {axis}}}}}')
    (tmp / "twice.toml").write_text("[axes]\nbeta_cross = { values = [0.1] }\n"
                                    "beta_cross = { values = [0.5] }\n")
    (tmp / "latin1.json").write_bytes('{"axes": {"bêta": 1}}'.encode("latin-1"))
    (tmp / "adir.json").mkdir()
    with open(tmp / "big.json", "wb") as f:  # sparse: refused by its size, never read
        f.truncate(65 * 2**20)
    (tmp / "longdrive.json").write_text(json.dumps(dict(
        small, axes={"beta_cross": {"values": [0.1]}},
        run=dict(small["run"], steps=2_000_000_000, transient=0, drive="lorenz"))))
    (tmp / "sp").mkdir()
    (tmp / "sp" / "sweep.json").write_text(json.dumps(dict(small, axes={"beta_cross": {
        "values": [0.1]}})))
    (tmp / "wlock" / "chunks").mkdir(parents=True)  # a store that another process writes
    (tmp / "wlock" / "chunks" / "manifest.json").write_text('{"format": "xmodal.sweep/1"}')
    (tmp / "wlock" / "chunks" / "chunk-00000.npz").write_bytes(b"a chunk")

    def params(name, text):
        (tmp / f"{name}.json").write_text(text)

    params("pseed", json.dumps(PARAMS).replace('"seed": 0', '"seed": 1e400'))
    params("pkey", json.dumps(dict(PARAMS, key=[-1, 0])))
    params("pnan", json.dumps(dict(PARAMS, params=dict(PARAMS["params"], B=[[float("nan"), 0.1],
                                                                          [0.1, 1.0]]))))
    params("pshape", json.dumps(dict(PARAMS, params=dict(PARAMS["params"], B=[1.0, 2.0, 3.0]))))
    params("pdup", json.dumps(PARAMS).replace('"seed": 0', '"seed": 0, "seed": 1'))
    params("phuge", json.dumps(dict(PARAMS, surrogate=dict(PARAMS["surrogate"],
                                                           sizes=[10**6, 10**6]))))
    params("psizes", json.dumps(dict(PARAMS, surrogate=dict(PARAMS["surrogate"], sizes=[0, -1]))))
    (tmp / "platin1.json").write_bytes(json.dumps(PARAMS).replace(
        '"audio"', '"audió"').encode("latin-1"))
    (tmp / "clip.wav").write_bytes(b"RIFF not decoded: the run stops first")
    (tmp / "pic.png").write_bytes(b"not decoded either")
    (tmp / "latin1.csv").write_bytes("id,audio\na,clip.wav\nb\xe9,clip.wav\n".encode("latin-1"))
    (tmp / "ok.csv").write_text("id,audio\na,clip.wav\n")


#: Environments of the case groups that change the process (each runs in its own driver).
GROUPS = {"default": {}, "cuda": {"JAX_PLATFORMS": "cuda"}, "xla": {"XLA_FLAGS": "--nonsense"}}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """``run(group)``: every case of CASES in that group, in one driver process (run once, on
    first use); returns (tmp, cases, results, before, seconds). While the drivers run, this
    process holds the lock of ``wlock`` (another writer of that store)."""
    import fcntl

    tmp = tmp_path_factory.mktemp("bad")
    _setup(tmp)
    subst = {"tmp": str(tmp), "port": str(_free_port())}
    cases = []
    for case in CASES:
        case = {k: ([x.format(**subst) for x in v] if isinstance(v, list) else
                    v.format(**subst) if isinstance(v, str) else v) for k, v in case.items()}
        case["argv"] = case["argv"].split()
        cases.append(case)
    lock = open(tmp / "wlock" / ".xmodal.lock", "w")  # noqa: SIM115 (held for the module)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.write("4242\n")
    lock.flush()
    done: dict = {}

    def run(group):
        if group in done:
            return done[group]
        mine = [c for c in cases if c.get("group", "default") == group]
        before = {c["id"]: _snapshot(Path(c["untouched"])) for c in mine if "untouched" in c}
        (tmp / f"cases-{group}.json").write_text(json.dumps(mine))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp / f"cases-{group}.json"),
                               str(tmp / f"results-{group}.json")], env=_env(**GROUPS[group]),
                              capture_output=True, text=True, timeout=600, cwd=tmp)
        seconds = time.perf_counter() - t0
        results = json.loads((tmp / f"results-{group}.json").read_text()) if (
            tmp / f"results-{group}.json").exists() else {}
        assert proc.returncode == 0, proc.stderr[-3000:]
        done[group] = (tmp, {c["id"]: c for c in mine}, results, before, seconds)
        return done[group]

    yield run
    lock.close()


def _param(case):
    group = case.get("group", "default")
    return pytest.param(case["id"], marks=[pytest.mark.slow] if group != "default" else [])


@pytest.mark.parametrize("case_id", [_param(c) for c in CASES])
def test_case(batch, case_id):
    group = next(c.get("group", "default") for c in CASES if c["id"] == case_id)
    tmp, cases, results, before, _ = batch(group)
    case, res = cases[case_id], results[case_id]
    err = res["stderr"]
    assert res["code"] == case["code"], err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    if case["code"] == 2:
        lines = [line for line in err.splitlines() if line.startswith("xmodal ")]
        assert len(lines) == 1 and ": error: " in lines[0], err  # one line says what is wrong
        assert case["msg"] in lines[0], lines[0]
    if "untouched" in case:
        assert _snapshot(Path(case["untouched"])) == before[case_id]
    if "absent" in case:
        assert not Path(case["absent"]).exists()
    docs = [strict_load(Path(p).read_text()) for p in case.get("json", [])]
    if case.get("stdout_json"):
        docs.append(strict_load(res["stdout"]))
    if "warns" in case:
        assert case["warns"] in err, err
    if case.get("nonfinite"):
        assert any(d.get("non_finite") for d in docs), "non-finite values not recorded"
        assert "non-finite value(s) written as null" in err
        for d in docs:
            for where in d.get("non_finite", {}):
                assert _lookup(d, where) is None, where
    if case_id == "fit-one-restart":  # no spread over one restart: null with its reason
        u = docs[0]["uncertainty"]
        assert u["restart_std"] is None and "2 converged" in u["restart_std_note"]
        assert "non_finite" not in docs[0] and "non-finite" not in err
    assert not list(tmp.rglob(".xmodal-write-test-*"))  # probe files removed


def _lookup(doc, pointer: str):
    """The value at a JSON Pointer (RFC 6901) like ``/metrics/dominance/min``."""
    x = doc
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        x = x[int(part)] if isinstance(x, list) else x[part]
    return x


def test_divergent_runs_record_where(batch):
    """What the divergent runs wrote: nulls exactly where the record says, finite elsewhere."""
    tmp, _, results, _, _ = batch("default")
    metrics = strict_load((tmp / "sdiv" / "metrics.json").read_text())
    assert metrics["non_finite"]["/dominance_01"] == "nan" and metrics["dominance_01"] is None
    assert metrics["graph_density"] is not None  # finite values stay
    lyap = strict_load(results["lyapunov-divergent-json"]["stdout"])
    assert lyap["exponents"] == [None, None, None] and lyap["non_finite"]["/sum"] == "nan"
    assert lyap["dt"] == 0.01 and lyap["n_steps"] == 2000
    params = strict_load((tmp / "f5" / "params.json").read_text())
    assert isinstance(params, dict) and params
    # --force wrote its files beside the stranger's, which stays
    assert (tmp / "keep2" / "other.txt").read_text() == "not ours"
    assert (tmp / "keep2" / "trajectory.npz").exists()
    # a sweep overwritten with --force is the new one (2 points, not the divergent 2 x ...)
    sweep = strict_load((tmp / "wdiv" / "sweep.json").read_text())
    assert sweep["grid_shape"] == [2] and "non_finite" not in sweep


def test_device_that_is_not_there(tmp_path):
    """--device tpu on a machine without one: one line, exit 2, nothing created."""
    proc = subprocess.run([sys.executable, "-m", "xmodal.cli", "lorenz", "--grid", "2",
                           "--device", "tpu", "--out", str(tmp_path / "o")], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "xmodal lorenz: error: --device tpu: no such JAX backend here" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_long_lyapunov_run_says_how_long_and_shows_progress():
    """1e11 Henon iterations (hours): an estimate on stderr within seconds, then progress;
    the run is killed once both were seen."""
    proc = subprocess.Popen([sys.executable, "-m", "xmodal.cli", "lyapunov", "--system", "henon",
                             "--steps", "100000000000"], env=_env(), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "estimated)" in line:
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    text = "".join(lines)
    assert re.search(r"lyapunov: 1e\+11 steps at about \S+ steps/s \(timed on \d+\): about "
                     r"[\d.]+ (min|h|days)\n", text), text
    assert "(~0 %, estimated)" in text or "%, estimated)" in text, text
    assert "Traceback" not in text


def _main(argv, capsys) -> tuple[int, str]:
    from xmodal.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_store_digests_and_lock(tmp_path, capsys):
    """A chunk rewritten as a valid file (same fingerprint and indices, other values) is refused
    on resume by its digest; while another writer holds the store's lock, --force deletes
    nothing and --resume is refused; the lock file goes with the run."""
    import numpy as np

    from xmodal.report import store_lock

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"axes": {"beta_cross": {"values": [0.1, 0.5]}},
                                "model": {"sizes": [4, 4], "k": 2},
                                "run": {"steps": 10, "transient": 0, "sample_every": 5,
                                        "chunk_size": 1}}))
    out = tmp_path / "o"
    code, err = _main(["sweep", str(spec), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    manifest = json.loads((out / "chunks" / "manifest.json").read_text())
    chunk = out / "chunks" / "chunk-00001.npz"
    assert set(manifest["chunk_sha256"]) == {"chunk-00000.npz", "chunk-00001.npz"}
    assert not (out / ".xmodal.lock").exists()
    with np.load(chunk) as z:
        arrays = dict(z)
    arrays["leaf_0000"] = arrays["leaf_0000"] + 1  # valid, right fingerprint and indices
    np.savez(chunk, **arrays)
    before = _snapshot(out)
    code, err = _main(["sweep", str(spec), "--out", str(out), "--quiet", "--resume"], capsys)
    assert code == 2, err
    assert (f"{chunk}: content differs from the digest recorded in manifest.json (field "
            f"'chunk_sha256.chunk-00001.npz')") in err
    with store_lock(out):
        for flag in ("--force", "--resume"):
            code, err = _main(["sweep", str(spec), "--out", str(out), "--quiet", flag], capsys)
            assert code == 2 and f"another xmodal process (pid {os.getpid()})" in err, err
    assert _snapshot(out) == before  # nothing deleted, and the lock file is gone
    code, err = _main(["sweep", str(spec), "--out", str(out), "--quiet", "--force"], capsys)
    assert code == 0, err  # the lock released: --force starts over
    assert json.loads((out / "chunks" / "manifest.json").read_text())["chunk_sha256"][
        "chunk-00001.npz"] == manifest["chunk_sha256"]["chunk-00001.npz"]


@pytest.mark.slow
def test_probe_figure_layer_checked_before_the_run(tmp_path, capsys):
    """--figure-layer out of the model's range: refused once its config is read, before the
    model runs; no bundle, no temporary file."""
    pytest.importorskip("torchvision")
    from test_probe_adapters import write_media

    from mllm_probe.tiny import save_tiny_qwen_omni

    model = save_tiny_qwen_omni(tmp_path / "qwen", full=False)
    media = write_media(str(tmp_path))
    out = tmp_path / "x.bundle"
    code, err = _main(["probe", "--model", str(model), "--image", media["image"], "--prompt",
                       "hi", "--out", str(out), "--figure", "--figure-layer", "99"], capsys)
    assert code == 2 and "--figure-layer 99: the model has layers 0 .. 3" in err, err
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_backend_and_xla_flags_tried_in_a_child(monkeypatch):
    """JAX_PLATFORMS naming a backend that is not here (JAX: a bare AssertionError) and an
    XLA_FLAGS that XLA aborts on: one line naming the variable, from a child process (the full
    commands: the "cuda" and "xla" groups of CASES, marked slow)."""
    from xmodal import report

    monkeypatch.setattr(report, "_JAX_CHECKED", {})
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    with pytest.raises(ValueError, match=r"^environment variable JAX_PLATFORMS='cuda': JAX "
                       r"cannot start that backend here \(.*\); unset it"):
        report.check_jax_environment()
    monkeypatch.setenv("JAX_PLATFORMS", "")
    with pytest.raises(ValueError, match=r"^--device tpu: no such JAX backend here"):
        report.check_jax_environment("tpu", arg="--device tpu")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1 --nonsense")
    with pytest.raises(ValueError, match=r"^environment variable XLA_FLAGS='--nonsense': XLA "
                       r"cannot start with it \(Unknown flag in XLA_FLAGS: --nonsense\)$"):
        report.check_jax_environment()
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    report.check_jax_environment()  # the defaults: nothing to try, no child
    assert len(report._JAX_CHECKED) == 3
