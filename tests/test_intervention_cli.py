"""``--intervene`` on ``xmodal probe`` and ``xmodal emotion`` and ``xmodal compare``, end to end on
a tiny Qwen2.5-Omni thinker: bad specs exit 2 naming the option and value, the intervention is
recorded in the bundle, the emotion metadata and table, and the comparison report is strict."""

import importlib.util
import json

import numpy as np
import pytest
from cli_files import run_cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                reason="transformers' Qwen2.5-Omni processor needs torchvision")



@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pytest.importorskip("torch")
    from emotion_media import one_torch_thread
    from test_probe_adapters import write_media

    from mllm_probe.tiny import save_tiny_qwen_omni

    threads = one_torch_thread()
    next(threads)
    root = tmp_path_factory.mktemp("intervene")
    model = save_tiny_qwen_omni(root / "qwen-thinker", full=False)
    yield {"model": str(model), "root": root, **write_media(str(root))}
    next(threads, None)


def probe_args(files, out, *extra):
    return ["probe", "--model", files["model"], "--audio", files["audio"], "--image",
            files["image"], "--prompt", "what emotion is this", "--query", "all", "--out",
            str(out), *extra]


@pytest.mark.parametrize("spec, message", [
    ("audio<-vision", "argument --intervene: 'audio<-vision': expected QUERY<-KEY"),
    ("audio<-voice:scale=2", "argument --intervene: 'audio<-voice:scale=2': unknown modality"),
    ("audio<-vision:scale=-1", "scale must be a finite number > 0, got -1.0"),
])
def test_bad_specs_exit_2_naming_the_option(spec, message, files, tmp_path, capsys):
    for command in (probe_args(files, tmp_path / "x.bundle"),
                    ["emotion", "--data", str(tmp_path), "--model", files["model"], "--out",
                     str(tmp_path / "run")]):
        code, _, err = run_cli([*command, "--intervene", spec], capsys)
        assert code == 2 and message in err, err
    assert not (tmp_path / "x.bundle").exists()


def test_layer_range_beyond_the_model_exits_2(files, tmp_path, capsys):
    code, _, err = run_cli(probe_args(files, tmp_path / "x.bundle", "--intervene",
                                      "audio<-vision:scale=2:layers=1-7"), capsys)
    assert code == 2
    assert "--intervene: 'audio<-vision:scale=2.0:layers=1-7': layers 1-7 outside the model's 4 " \
           "language layers" in err
    assert not (tmp_path / "x.bundle").exists()


def fit_params(modalities, layers=4) -> dict:
    """A params.json in the format `xmodal fit` writes (parameters chosen, not fitted)."""
    m = len(modalities)
    return {"format": "xmodal-fit", "format_version": 1, "seed": 0,
            "modalities": list(modalities),
            "surrogate": {"sizes": [8] * m, "k": 4, "p": 0.01, "cross_density": 0.2,
                          "normalisation": "softmax", "n_initial": 2, "horizon": 2.0, "dt": 0.1},
            "params": {"B": (np.eye(m) + 0.5).tolist(), "K": np.ones((m, m)).tolist(),
                       "omega_spread": 0.3, "gain": [0.0] * m,
                       "times": np.linspace(0.5, 2.0, layers).tolist()}}


def test_probe_then_compare(files, tmp_path, capsys):
    from mllm_probe.bundle import load_bundle

    a, b = tmp_path / "a.bundle", tmp_path / "b.bundle"
    spec = "audio<-vision:scale=4:layers=1-2"
    assert run_cli(probe_args(files, a), capsys)[0] == 0
    assert run_cli(probe_args(files, b, "--intervene", spec), capsys)[0] == 0
    base, moved = load_bundle(a), load_bundle(b)
    assert base.interventions == ()
    assert [i["spec"] for i in moved.interventions] == ["audio<-vision:scale=4.0:layers=1-2"]
    np.testing.assert_array_equal(moved.block_mass[0], base.block_mass[0])   # before the range
    assert np.abs(moved.block_mass[1, :, 1, 2] - base.block_mass[1, :, 1, 2]).max() > 1e-3

    params = tmp_path / "params.json"
    params.write_text(json.dumps(fit_params(("audio", "vision"))))
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(["compare", "--baseline", str(a), "--intervened", str(b),
                                 "--params", str(params), "--out", str(out)], capsys)
    assert code == 0, err
    assert "warning" not in err
    summary = json.loads((out / "summary.json").read_text(), parse_constant=pytest.fail)
    assert summary["intervention"]["spec"] == "audio<-vision:scale=4.0:layers=1-2"
    rows = summary["layers"]
    assert [r["in_range"] for r in rows] == [False, True, True, False]
    assert rows[0]["shares"]["audio<-vision"]["measured"] == 0.0        # untouched layer
    assert rows[0]["shares"]["audio<-vision"]["finite"] == 0.0
    changed = [(r["layer"], k, v) for r in rows[1:] for k, v in r["shares"].items()
               if abs(v["measured"]) > 1e-7]
    assert {k for _, k, _ in changed} >= {"audio<-vision"} and len(changed) >= 3
    for name in ("finite", "linear"):
        ag = summary["agreement"][name]
        assert ag["n"] == len(changed)
        assert ag["sign_agree"] == sum(np.sign(v["measured"]) == np.sign(v[name])
                                       for _, _, v in changed)
        assert ag["rho"] is None or -1 <= ag["rho"] <= 1
    assert "sign agreement" in stdout
    report = (out / "report.md").read_text()
    assert "audio<-vision:scale=4.0:layers=1-2" in report
    assert "| 1 | yes | audio<-vision |" in report

    # the bundles of two different inputs: compared anyway, with a warning
    other = tmp_path / "c.bundle"
    args = probe_args(files, other, "--intervene", spec)
    args[args.index("--prompt") + 1] = "say it"
    assert run_cli(args, capsys)[0] == 0
    code, _, err = run_cli(["compare", "--baseline", str(a), "--intervened", str(other),
                            "--params", str(params), "--out", str(tmp_path / "cmp2")], capsys)
    assert code == 0 and "warning: the bundles' prompt differ" in err

    # a fit without the intervened modality, and the runs swapped: exit 2, nothing written
    params.write_text(json.dumps(fit_params(("text", "audio"))))
    for base_path, moved_path, message in ((a, b, "do not include 'vision'"),
                                           (b, a, "compare needs a run without intervention")):
        code, _, err = run_cli(["compare", "--baseline", str(base_path), "--intervened",
                                str(moved_path), "--params", str(params), "--out",
                                str(tmp_path / "bad")], capsys)
        assert code == 2 and message in err, err
        assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_emotion_run_records_the_intervention(files, tmp_path_factory, capsys):
    from emotion_media import cremad_folder, tiny_model

    from mllm_probe.bundle import load_bundle
    from mllm_probe.emotion.table import read_table

    data, model = cremad_folder(tmp_path_factory), tiny_model("qwen2_5_omni", tmp_path_factory)
    out = tmp_path_factory.mktemp("emotion-ko")
    args = ["emotion", "--data", data, "--model", model, "--out", str(out), "--limit", "1",
            "--conditions", "face_voice", "--no-generate", "--bundles", "1", "--n-boot", "50",
            "--num-frames", "4", "--min-pixels", "784", "--max-pixels", "3136"]
    code, _, err = run_cli([*args, "--intervene", "text<-audio:knockout"], capsys)
    assert code == 0, err
    meta = json.loads((out / "predictions.meta.json").read_text())
    assert meta["intervention"] == "text<-audio:knockout"
    rows = read_table(out / "predictions.csv")
    assert len(rows) == 57 and {r["intervention"] for r in rows} == {"text<-audio:knockout"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["intervention"] == "text<-audio:knockout"
    (bundle,) = (out / "bundles").iterdir()
    b = load_bundle(bundle)
    assert [i["spec"] for i in b.interventions] == ["text<-audio:knockout"]
    np.testing.assert_array_equal(b.block_mass[:, :, 0, 1], 0.0)   # the last (text) row
    # the same folder without the intervention is another configuration: refused
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 2 and "intervention" in err
