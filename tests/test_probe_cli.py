"""``xmodal probe``: argument errors exit 2 naming the argument; one item and a resumable batch
on a tiny saved Qwen2.5-Omni thinker write valid bundles and figures."""

import importlib.util
import os

import cli_files
import numpy as np
import pytest


def run_cli(args, capsys):
    return cli_files.run_cli(["probe", *args], capsys)


@pytest.mark.parametrize("args, message", [
    (["--model", "m", "--prompt", "p"], "--out is required"),
    (["--model", "m", "--out", "b.bundle"], "--prompt is required"),
    (["--model", "m", "--prompt", "p", "--out", "b.bundle", "--audio", "/no/such.wav"],
     "--audio: file '/no/such.wav' does not exist"),
    (["--model", "m", "--prompt", "p", "--out", "b.bundle", "--frames", "/no/frames"],
     "--frames: folder '/no/frames' does not exist"),
    (["--model", "/no/such/model", "--prompt", "p", "--out", "b.bundle"],
     "--model: path '/no/such/model' does not exist"),
    (["--model", "m", "--prompt", "p", "--out", "/no/dir/b.bundle"], "--out: folder '/no/dir'"),
    (["--model", "m", "--prompt", "p", "--out", "b.bundle", "--query", "answer"],
     "--query answer needs --answer-tokens"),
    (["--model", "m", "--prompt", "p", "--out", "b.bundle", "--out-dir", "d"],
     "cannot be combined"),
    (["--model", "m", "--out-dir", "d"], "--out-dir needs --manifest or --input-dir"),
    (["--model", "m", "--manifest", "m.csv"], "--out-dir is required"),
    (["--model", "m", "--prompt", "p", "--out", "b", "--video", "v.mp4", "--image", "i.png"],
     "argument --image: not allowed with argument --video"),
    (["--model", "m", "--prompt", "p", "--out", "b", "--full-map-layers", "x"],
     "argument --full-map-layers: expected comma-separated integers"),
    (["--prompt", "p", "--out", "b"], "the following arguments are required: --model"),
])
def test_bad_arguments_exit_2_naming_the_argument(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert message in err


# ------------------------------------------------------------------- runs on a tiny model
needs_processors = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="transformers' Qwen2.5-Omni processor needs torchvision")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pytest.importorskip("torch")
    from test_probe_adapters import write_media

    from mllm_probe.tiny import save_tiny_qwen_omni

    root = tmp_path_factory.mktemp("cli")
    model = save_tiny_qwen_omni(root / "qwen-thinker", full=False)  # the thinker-only layout
    return {"model": str(model), **write_media(str(root))}


@needs_processors
def test_one_item_writes_bundle_and_figure(files, tmp_path, capsys):
    from PIL import Image

    from mllm_probe.bundle import load_bundle

    out = tmp_path / "item.bundle"
    code, stdout, err = run_cli(["--model", files["model"], "--audio", files["audio"],
                                 "--image", files["image"], "--prompt", "what emotion is this",
                                 "--query", "all", "--out", str(out), "--figure"], capsys)
    assert code == 0, err
    assert "wrote" in stdout and "4 layers x 4 heads" in stdout
    bundle = load_bundle(out)
    assert bundle.query_set == {"kind": "all"}
    assert [i["kind"] for i in bundle.inputs] == ["audio", "image"]
    counts = bundle.query_counts()
    assert counts[1] == 25 and counts[2] == 16  # 1 s audio, 4 x 4 image patches
    present = counts > 0
    np.testing.assert_allclose(bundle.block_mass[:, :, present].sum(-1), 1, atol=1e-5)
    with Image.open(tmp_path / "item.png") as png:
        assert png.size == (1100, 420)
        assert len(np.unique(np.asarray(png.convert("L")))) > 10  # something was drawn


@needs_processors
def test_batch_manifest_resumes(files, tmp_path, capsys):
    from mllm_probe.bundle import load_bundle

    manifest = tmp_path / "items.csv"
    manifest.write_text("id,audio,image,prompt\n"
                        f"a,{files['audio']},{files['image']},what emotion is this\n"
                        f"b,{files['audio']},,\n")
    out_dir = tmp_path / "bundles"
    args = ["--model", files["model"], "--manifest", str(manifest), "--out-dir", str(out_dir),
            "--prompt", "say the emotion"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "done 2, skipped 0, failed 0" in stdout and "probe: 2/2 items (100.0%)" in err
    assert load_bundle(out_dir / "b.bundle").prompt.count("say the emotion") == 1
    assert load_bundle(out_dir / "a.bundle").prompt.count("what emotion is this") == 1
    # a truncated bundle is not "done": only that item runs again
    raw = (out_dir / "a.bundle").read_bytes()
    (out_dir / "a.bundle").write_bytes(raw[: len(raw) // 2])
    before = os.path.getmtime(out_dir / "b.bundle")
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "done 1, skipped 1, failed 0" in stdout
    assert "[2/2] b: already done, skipped" in err
    assert os.path.getmtime(out_dir / "b.bundle") == before
    assert load_bundle(out_dir / "a.bundle").num_layers == 4


def test_bad_manifest_and_model_folder(tmp_path, capsys):
    (tmp_path / "clip.wav").write_bytes(b"RIFF")  # exists; never decoded: the run stops first
    manifest = tmp_path / "bad.csv"
    manifest.write_text("id,audio\nx,missing.wav\n")
    code, _, err = run_cli(["--model", str(tmp_path), "--manifest", str(manifest),
                            "--out-dir", str(tmp_path / "o"), "--prompt", "p"], capsys)
    assert code == 2 and "line 2, column 'audio': 'missing.wav' does not exist" in err
    manifest.write_text("id,sound\nx,clip.wav\n")
    code, _, err = run_cli(["--model", str(tmp_path), "--manifest", str(manifest),
                            "--out-dir", str(tmp_path / "o"), "--prompt", "p"], capsys)
    assert code == 2 and "columns must include 'id'" in err
    pytest.importorskip("torch")
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    code, _, err = run_cli(["--model", str(not_a_model), "--audio", str(tmp_path / "clip.wav"),
                            "--prompt", "p", "--out", str(tmp_path / "b.bundle")], capsys)
    assert code == 2 and "--model: model" in err and "cannot load a config" in err


def test_folder_scan_and_manifest_paths(tmp_path):
    from mllm_probe.batch import read_manifest, scan_folder

    for name in ("c1.wav", "c1.mp4", "c2.wav", "c3.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    items = scan_folder(tmp_path)
    assert [(i.id, bool(i.audio), bool(i.video), bool(i.image)) for i in items] == [
        ("c1", True, True, False), ("c2", True, False, False), ("c3", False, False, True)]
    (tmp_path / "c2.flac").write_bytes(b"x")
    with pytest.raises(ValueError, match="two audio files for item 'c2'"):
        scan_folder(tmp_path)
    with pytest.raises(ValueError, match="holds no audio, video or image files"):
        scan_folder(_empty(tmp_path))
    sub = tmp_path / "lists"
    sub.mkdir()
    (sub / "m.csv").write_text("id,video,prompt\nc1,../c1.mp4,hello\n")
    (item,) = read_manifest(sub / "m.csv")  # relative to the manifest's folder
    assert item.video == str(sub / ".." / "c1.mp4") and item.prompt == "hello"
    (sub / "dup.csv").write_text("id,video\nc1,../c1.mp4\nc1,../c1.mp4\n")
    with pytest.raises(ValueError, match="line 3: duplicate id 'c1'"):
        read_manifest(sub / "dup.csv")


def _empty(root):
    path = root / "empty-folder"
    path.mkdir()
    return path
