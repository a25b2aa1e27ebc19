"""``xmodal emotion`` end to end on a generated CREMA-D folder with tiny Qwen2.5-Omni-thinker and
Gemma 3n models: bad clips skipped with reasons, every output written, a killed run resumed
without duplicate or missing rows, other configurations refused, bad arguments exit 2."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import cli_files
import numpy as np
import pytest
from emotion_media import (
    BROKEN,
    GOOD,
    LFS_STUB,
    SKIPPED,
    cremad_folder,
    one_torch_thread,
    tiny_model,
)

from mllm_probe.emotion.table import SCORE_COLUMNS, read_table
from xmodal.cli import main

OUTPUTS = ("predictions.csv", "predictions.meta.json", "skipped.csv", "summary.json",
           "report.md", "confusion.png", "attractor_graph.png", "sankey.png", "js_distance.png")
#: Options shared by the reference run and the killed/resumed run (short answers, 4 frames of
#: 56 x 56 px through qwen-omni-utils).
OPTIONS = ["--num-frames", "4", "--max-new-tokens", "4", "--bundles", "1", "--n-boot", "200",
           "--min-pixels", "784", "--max-pixels", "3136"]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    yield from one_torch_thread()


def run_cli(args, capsys):
    return cli_files.run_cli(["emotion", *args], capsys)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return {"data": cremad_folder(tmp_path_factory),
            "qwen": tiny_model("qwen2_5_omni", tmp_path_factory)}


@pytest.fixture(scope="module")
def qwen_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("qwen-run")
    code = main(["emotion", "--data", setup["data"], "--model", setup["qwen"], "--out", str(out),
                 *OPTIONS])
    assert code == 0
    return out


def keyed(rows):
    return {(r["clip"], r["condition"], r["variant"]): r for r in rows}


def test_qwen_run_writes_every_output_and_skips_bad_clips(qwen_run):
    from mllm_probe.bundle import load_bundle

    for name in OUTPUTS:
        assert (qwen_run / name).stat().st_size > 0, name
    rows = read_table(qwen_run / "predictions.csv")
    assert len(rows) == len(keyed(rows)) == len(GOOD) * 3 * 57
    assert {r["clip"] for r in rows} == set(GOOD)
    assert {r["condition"] for r in rows} == {"face_voice", "face_only", "voice_only"}
    for r in rows:
        allowed = [c for c in SCORE_COLUMNS if r[c]]
        assert r["predicted"] in {c[len("score_"):] for c in allowed}
        best = max(allowed, key=lambda c: float(r[c]))
        assert r["predicted"] == best[len("score_"):]
        assert r["parse_status"] in ("ok", "invalid_json", "bad_schema", "unknown_label",
                                     "forbidden_label")
    with open(qwen_run / "skipped.csv") as f:
        skipped = {r["clip"]: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == set(SKIPPED)
    for clip, reason in SKIPPED.items():
        assert reason in skipped[clip]
    summary = json.loads((qwen_run / "summary.json").read_text())
    assert summary["rows"] == len(rows) and summary["clips"] == len(GOOD)
    assert summary["primary"]["claim"]["verdict"] in ("supported", "contradicted",
                                                      "no detectable effect", "not testable")
    assert set(summary["primary"]["analyses"]) == {"unperturbed", "misperceptions",
                                                   "forced_fallbacks"}
    assert all(r["actor"] == r["clip"][:4] for r in rows)  # the CREMA-D actor id
    assert set(summary["primary"]["js_distance"]["pairs"]) == {
        "face_voice|face_only", "face_voice|voice_only", "face_only|voice_only"}
    assert sum(summary["parse_status"]["face_voice"].values()) == len(GOOD) * 57
    for cond in ("face_voice", "face_only", "voice_only"):   # 1 s audio, 4 frames of 56 px
        tokens = summary["tokens"][cond]
        assert tokens["units"] == len(GOOD)
        assert tokens["audio"] == {"mean": 25.0, "min": 25.0, "median": 25.0, "max": 25.0}
        assert tokens["vision"]["mean"] == 32.0
        assert sum(tokens["prefix_share"].values()) == pytest.approx(1.0)
    assert all(int(r["tokens_audio"]) == 25 and int(r["tokens_vision"]) == 32 for r in rows)
    report = (qwen_run / "report.md").read_text()
    assert "## Tokens per modality" in report and "| face_only | 2 |" in report
    for piece in ("## Claim test", "(sankey.png)", "(attractor_graph.png)", "(confusion.png)",
                  LFS_STUB, BROKEN, "Attractor hierarchy"):
        assert piece in report
    bundles = sorted(os.listdir(qwen_run / "bundles"))
    assert len(bundles) == 3 and all(b.endswith(".bundle") for b in bundles)
    b = load_bundle(qwen_run / "bundles" / bundles[0])
    assert b.extra["condition"] in ("face_voice", "face_only", "voice_only")
    assert b.num_layers == 4


def test_killed_run_resumes_without_duplicate_or_missing_rows(qwen_run, setup, tmp_path, capsys):
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "xmodal.cli", "emotion", "--data", setup["data"], "--model",
           setup["qwen"], "--out", str(out), *OPTIONS]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    table = out / "predictions.csv"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:  # kill once a unit is written
            if table.exists() and table.read_text().count("\n") > 57:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    complete_rows = table.read_bytes().count(b"\n") - 1  # a torn last line is not counted
    units_done = complete_rows // 57                      # units are written one after another
    assert 1 <= units_done < len(GOOD) * 3
    code, _, err = run_cli(["--data", setup["data"], "--model", setup["qwen"], "--out", str(out),
                            *OPTIONS, "--resume"], capsys)
    assert code == 0, err
    assert f"{units_done} done before" in err
    resumed, reference = read_table(table), read_table(qwen_run / "predictions.csv")
    assert len(resumed) == len(keyed(resumed)) == len(reference)   # no duplicates
    a, b = keyed(resumed), keyed(reference)
    assert set(a) == set(b)                                         # nothing missing
    for key in b:
        assert a[key]["predicted"] == b[key]["predicted"]
        assert a[key]["generated"] == b[key]["generated"]
        x = np.array([float(a[key][c] or "nan") for c in SCORE_COLUMNS])
        y = np.array([float(b[key][c] or "nan") for c in SCORE_COLUMNS])
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
    assert len(os.listdir(out / "bundles")) == 3


def test_from_table_reproduces_the_run_summary(qwen_run, tmp_path, capsys):
    """The analysis of the run's own table, re-done from the table alone, is the same."""
    out = tmp_path / "again"
    code, stdout, err = run_cli(["--from-table", str(qwen_run / "predictions.csv"), "--out",
                                 str(out), "--n-boot", "200"], capsys)
    assert code == 0, err
    a = json.loads((qwen_run / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    for key in ("rows", "clips", "tokens", "primary", "generated", "parse_status", "skipped"):
        assert a[key] == b[key], key
    assert b["model"]["id"] == a["model"]["id"] and b["data"] == a["data"]
    report = (out / "report.md").read_text()
    assert "re-analysed from the table" in report
    old = (qwen_run / "report.md").read_text()
    assert report[report.index("## Claim test"):] == old[old.index("## Claim test"):]


def test_other_configuration_or_missing_resume_exit_2(qwen_run, setup, capsys):
    base = ["--data", setup["data"], "--model", setup["qwen"], "--out", str(qwen_run)]
    code, _, err = run_cli(base + OPTIONS, capsys)
    assert code == 2 and "already holds predictions.csv; pass --resume" in err
    code, _, err = run_cli(base + OPTIONS[:4] + ["--conditions", "face_voice", "--resume"], capsys)
    assert code == 2 and "comes from another configuration (conditions:" in err


def test_gemma3n_run_from_a_manifest(setup, tmp_path_factory, tmp_path, capsys):
    gemma = tiny_model("gemma3n", tmp_path_factory)
    video = os.path.join(setup["data"], "VideoFlash")
    manifest = tmp_path / "clips.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "video", "audio", "perceived_multimodal"])
        w.writerow(["good", "angry", os.path.join(video, "1001_DFA_ANG_XX.flv"), "", "A"])
        w.writerow(["stub", "neutral", os.path.join(video, LFS_STUB + ".flv"), "", ""])
        w.writerow(["second", "sad", os.path.join(video, "1003_TIE_SAD_LO.flv"),
                    os.path.join(setup["data"], "AudioWAV", "1003_TIE_SAD_LO.wav"), "S:N"])
    out = tmp_path / "gemma"
    code, stdout, err = run_cli(["--manifest", str(manifest), "--model", gemma, "--out", str(out),
                                 "--num-frames", "2", "--max-new-tokens", "3", "--n-boot", "100",
                                 "--limit", "2", "--conditions", "voice_only,face_voice"],
                                capsys)
    assert code == 0, err
    assert "skip stub: video: Git LFS pointer stub" in err and "ETA" in err
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    rows = read_table(out / "predictions.csv")
    assert len(rows) == 2 * 2 * 57 and {r["clip"] for r in rows} == {"good", "second"}
    assert {r["condition"] for r in rows} == {"voice_only", "face_voice"}
    assert "wrote" in stdout and "not testable" in stdout  # the claim needs all three conditions
    assert ("**Primary verdict (unperturbed prompt): not testable** (needs the conditions"
            in (out / "report.md").read_text())


@pytest.mark.parametrize("args, message", [
    (["--model", "m", "--out", "o"],
     "one of the arguments --data --manifest --from-table is required"),
    (["--data", "/no/such", "--model", "m", "--out", "o"], "--data: folder '/no/such' does not"),
    (["--manifest", "/no/m.csv", "--model", "m", "--out", "o"], "--manifest: file '/no/m.csv'"),
    (["--data", ".", "--model", "/no/model", "--out", "o"], "--model: path '/no/model' does not"),
    (["--data", ".", "--model", "m", "--out", "o", "--conditions", "face,voice"],
     "argument --conditions: expected distinct names among face_voice,face_only,voice_only"),
    (["--data", ".", "--model", "m", "--out", "o", "--limit", "0"],
     "argument --limit: must be >= 1"),
    (["--data", ".", "--model", "m", "--out", "o", "--processor-kwargs", "[1]"],
     "argument --processor-kwargs: expected a JSON object"),
    (["--data", ".", "--model", "m", "--out", "o", "--min-share", "2"],
     "argument --min-share: must be in [0, 1]"),
])
def test_bad_arguments_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and message in err, err


def test_data_folder_without_crema_layout_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["--data", str(tmp_path), "--model", str(tmp_path), "--out", "o"],
                           capsys)
    assert code == 2 and "no VideoFlash/ folder" in err


def test_a_folder_of_bad_clips_only_completes_with_reasons(setup, tmp_path, capsys):
    import shutil

    data = tmp_path / "bad"
    for sub in ("AudioWAV", "VideoFlash", "processedResults"):
        (data / sub).mkdir(parents=True)
    src = setup["data"]
    shutil.copy(os.path.join(src, "VideoFlash", LFS_STUB + ".flv"), data / "VideoFlash")
    shutil.copy(os.path.join(src, "AudioWAV", LFS_STUB + ".wav"), data / "AudioWAV")
    shutil.copy(os.path.join(src, "VideoFlash", BROKEN + ".flv"), data / "VideoFlash")
    shutil.copy(os.path.join(src, "AudioWAV", BROKEN + ".wav"), data / "AudioWAV")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["--data", str(data), "--model", setup["qwen"], "--out", str(out),
                                 "--n-boot", "10"], capsys)
    assert code == 0, err
    assert "0 prediction rows, 2 clips skipped" in stdout and "not testable" in stdout
    for name in OUTPUTS:
        assert (out / name).exists(), name
    assert BROKEN in (out / "report.md").read_text()
