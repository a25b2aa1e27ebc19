"""The emotion claim test under its null and under a planted effect (simulated tables), actor
resampling, Holm, and ``xmodal emotion --from-table`` on a table on disk (numpy only; the CLI
run blocks torch and the media libraries)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mllm_probe.emotion import attractors as A
from mllm_probe.emotion import simulate as S
from mllm_probe.emotion import statistics as T
from mllm_probe.emotion.table import COLUMNS
from xmodal.cli import main

#: Nominal rate of each directed verdict under the null (two-sided alpha 0.05 split in two).
NOMINAL = 0.025


def verdicts(process, n_tables, *, seed, n_clips=100, n_actors=None):
    """Counts of the primary verdicts over simulated tables (unperturbed prompt only)."""
    out = dict.fromkeys(T.VERDICTS, 0)
    for child in np.random.SeedSequence(seed).spawn(n_tables):
        rng = np.random.default_rng(child)
        p = S.simulate(rng, process, n_clips=n_clips, n_actors=n_actors)
        out[T.claim(T.cells(p), rng=rng, n_perm=200, n_boot=10)["verdict"]] += 1
    return out


def upper(n):
    """Nominal rate + 3 binomial standard errors, as a count of ``n`` tables."""
    return n * (NOMINAL + 3 * np.sqrt(NOMINAL * (1 - NOMINAL) / n))


@pytest.mark.parametrize("process, n_actors", [
    (S.null((0.5, 0.5, 0.15)), None),                       # unequal error rates
    (S.null((0.4, 0.4, 0.4), actor_concentration=0.5, actor_rate_sd=1.5), 10),  # strong actors
], ids=["unequal-rates", "actor-clustering"])
def test_null_gives_each_verdict_at_about_the_nominal_rate(process, n_actors):
    n = 200
    got = verdicts(process, n, seed=11, n_actors=n_actors)
    n -= got["not testable"]
    assert n >= 190, got
    assert got["supported"] <= upper(n) and got["contradicted"] <= upper(n), got
    # not grossly conservative either: both directions together near 2 x nominal
    both = got["supported"] + got["contradicted"]
    assert both >= 2 * n * NOMINAL - 3 * np.sqrt(n * 2 * NOMINAL * (1 - 2 * NOMINAL)), got


def test_plugin_claim_test_is_not_calibrated_on_the_same_null():
    """The uncalibrated difference of plug-in distances (clip bootstrap) on the unequal-rate
    null: "supported" far above the nominal rate, as the issue measured."""
    supported = 0
    for child in np.random.SeedSequence(5).spawn(40):
        rng = np.random.default_rng(child)
        p = S.simulate(rng, S.null((0.5, 0.5, 0.1)), n_clips=100)
        _, counts = A.clip_error_counts(p, T.CLAIM_CONDITIONS, "targets")
        supported += A.claim_test(counts, T.CLAIM_CONDITIONS, seed=rng, n_boot=200)[
            "verdict"] == "supported"
    assert supported >= 10, supported


def test_planted_effect_is_detected():
    got = verdicts(S.planted((0.5, 0.5, 0.5)), 40, seed=3)
    assert got["supported"] >= 32 and got["contradicted"] == 0, got
    # the reverse effect (Face+Voice errors from Voice-only's attractor) is "contradicted"
    reverse = S.ErrorProcess((0.5, 0.5, 0.5), (S.TO_SAD, S.TO_NEUTRAL, S.TO_SAD))
    got = verdicts(reverse, 20, seed=4)
    assert got["contradicted"] >= 15 and got["supported"] == 0, got


def test_too_few_errors_is_not_testable():
    p = S.simulate(0, S.null((0.02, 0.02, 0.02)), n_clips=100)
    c = T.claim(T.cells(p), rng=np.random.default_rng(0), n_perm=50, n_boot=10)
    assert c["verdict"] == "not testable" and "too few errors" in c["reason"]


def test_permutation_moves_labels_only_between_conditions_that_erred():
    """Every permutation drawn for a cell fixes its correct slots (each condition keeps its
    error count in every cell) and is uniform over the permutations of its error slots."""
    import itertools
    from collections import Counter

    for mask in range(8):
        errs = [j for j in range(3) if mask >> j & 1]
        drawn = Counter(tuple(x) for x in T._PERMS[mask])
        assert all(perm[j] == j for perm in drawn for j in range(3) if j not in errs)
        moves = {perm for perm in itertools.permutations(range(3))
                 if all(perm[j] == j for j in range(3) if j not in errs)}
        assert set(drawn) == moves and len(set(drawn.values())) == 1
    # on cells: the permuted error counts per condition and cell equal the data's
    p = S.simulate(1, S.null((0.5, 0.5, 0.2)), n_clips=30)
    c = T.cells(p)
    rng = np.random.default_rng(0)
    perm = T._PERMS[(c.codes >= 0) @ [1, 2, 4], rng.integers(0, 6, (5, len(c)))]
    shuffled = np.take_along_axis(np.broadcast_to(c.codes, perm.shape), perm, axis=-1)
    assert ((shuffled >= 0) == (c.codes >= 0)).all()
    assert (np.sort(shuffled, -1) == np.sort(c.codes, -1)).all()


def test_holm():
    np.testing.assert_allclose(T.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(T.holm([0.5, 0.01]), [0.5, 0.02])
    np.testing.assert_allclose(T.holm([0.8, 0.9]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(T.holm([0.04, 0.01, 0.03, 0.5]), [0.09, 0.04, 0.09, 0.5])


def test_analyses_are_kept_apart_and_secondaries_holm_corrected():
    rng = np.random.default_rng(2)
    p = S.simulate(rng, S.planted((0.3, 0.3, 0.3)), n_clips=40, variant_indices=range(57))
    masks = [a.mask(p) for a in T.ANALYSES]
    assert (sum(m.astype(int) for m in masks) == 1).all()             # a partition of the rows
    forced = masks[2]
    assert p.forbidden[np.arange(len(p)), p.intended][forced].all()
    assert (p.predicted != p.intended)[forced].all()                  # forced: always errors
    out = T.analyses(p, T.CLAIM_CONDITIONS, rng=rng, n_perm=200, n_boot=50)
    assert list(out) == ["unperturbed", "misperceptions", "forced_fallbacks"]
    assert out["unperturbed"]["claim"]["p_adjusted"] == out["unperturbed"]["claim"]["p_value"]
    sec = [out[k]["claim"] for k in ("misperceptions", "forced_fallbacks")]
    np.testing.assert_allclose([c["p_adjusted"] for c in sec], T.holm([c["p_value"] for c in sec]))
    assert all(c["verdict"] == "supported" for c in sec), sec
    assert out["forced_fallbacks"]["claim"]["cells"] == 40 * 26  # 26 variants forbid a label


def test_agreement_on_hand_made_cells():
    rows = []
    # actor 1001: 3 cells fv = fo != vo; actor 1002: 1 cell fv = vo != fo
    for clip, (fv, fo, vo) in (("1001_AAA_ANG_XX", ("sad", "sad", "happy")),
                               ("1001_AAB_ANG_XX", ("sad", "sad", "fear")),
                               ("1001_AAC_ANG_XX", ("angry", "angry", "sad")),
                               ("1002_AAA_ANG_XX", ("happy", "sad", "happy"))):
        rows += [{"clip": clip, "condition": c, "variant": "0", "intended": "angry",
                  "predicted": x, "forbidden": "", "perceived": ""}
                 for c, x in zip(T.CLAIM_CONDITIONS, (fv, fo, vo), strict=True)]
    g = T.agreement(T.cells(A.from_rows(rows)), rng=np.random.default_rng(0), n_boot=400)
    assert g["all"]["p_fv_fo"] == 0.75 and g["all"]["p_fv_vo"] == 0.25
    assert g["all"]["difference"] == 0.5
    # two actors: resamples give 1 (actor 1001 twice), -1 (1002 twice) or 0.5 (one of each)
    assert g["all"]["low"] == -1 and g["all"]["high"] == 1
    assert g["face_voice_errors"]["cells"] == 3 and g["face_voice_errors"]["difference"] == 1 / 3


def test_actor_from_column_name_or_clip():
    rows = [{"clip": clip, "actor": actor, "condition": "face_voice", "variant": "0",
             "intended": "sad", "predicted": "sad", "forbidden": "", "perceived": ""}
            for clip, actor in (("1042_IEO_SAD_HI", ""), ("x1", "spk7"), ("x2", ""))]
    assert list(A.from_rows(rows).actor) == ["1042", "spk7", "x2"]


def test_kept_rank_of_a_clear_hierarchy():
    p = S.simulate(0, S.null((0.3, 0.3, 0.3)), n_clips=60, variant_indices=range(57))
    h = T.kept_rank(p.where(p.condition == "face_voice"), rng=np.random.default_rng(1),
                    n_boot=100)
    assert h[0]["label"] == "neutral" and h[0]["kept"] >= 0.95      # the planted attractor
    point = A.hierarchy(p.where(p.condition == "face_voice"))
    assert h == [{**x, "kept": y["kept"]} for x, y in zip(point, h, strict=True)]
    assert all(0 <= x["kept"] <= 1 for x in h)


def run_cli(args, capsys):
    try:
        code = main(["emotion", *args])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


#: Runs the CLI with torch, transformers and the media readers impossible to import.
BLOCKED = """
import importlib.abc, importlib.machinery, sys
BLOCK = {"torch", "transformers", "soundfile", "av", "torchvision", "qwen_omni_utils"}
class Blocked(importlib.abc.Loader, importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ImportError(f"{spec.name} blocked", name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, Blocked())
from xmodal.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_from_table_end_to_end_without_torch(tmp_path):
    """A table written before the ``actor`` column existed, analysed with no model or media."""
    p = S.simulate(7, S.planted((0.5, 0.5, 0.5)), n_clips=100, variant_indices=range(0, 57, 4))
    S.write_table(tmp_path / "full.csv", p)
    table = tmp_path / "run" / "predictions.csv"
    table.parent.mkdir()
    with open(tmp_path / "full.csv") as f, open(table, "w", newline="") as g:
        old = [c for c in COLUMNS if c != "actor"]
        w = csv.DictWriter(g, old, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(csv.DictReader(f))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", BLOCKED, "emotion", "--from-table", str(table),
                           "--out", str(out), "--n-boot", "200", "--n-perm", "500"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "claim (Face+Voice errors track Face-only): supported" in proc.stdout
    for name in ("summary.json", "report.md", "confusion.png", "attractor_graph.png",
                 "sankey.png", "js_distance.png"):
        assert (out / name).stat().st_size > 0, name
    s = json.loads((out / "summary.json").read_text(), parse_constant=pytest.fail)
    assert s["rows"] == len(p) and s["source_table"] == str(table.resolve())
    an = s["primary"]["analyses"]
    assert an["unperturbed"]["claim"]["cells"] == 100 and s["primary"]["actors"] == 25
    assert s["primary"]["claim"] == an["unperturbed"]["claim"]
    assert an["unperturbed"]["claim"]["verdict"] == "supported"
    report = (out / "report.md").read_text()
    assert "**Primary verdict (unperturbed prompt): supported**" in report
    forced = T.FORCED_FALLBACKS.mask(p).sum() // 3
    assert f"| forced_fallbacks | {forced} |" in report and "rank kept in" in report


@pytest.mark.parametrize("edit, message", [
    (None, "--from-table: file '{table}' does not exist"),
    (lambda t: t.replace(",predicted,", ",guess,", 1), "{table}: missing column(s) ['predicted']"),
    (lambda t: t.replace(",face_voice,0,", ",face_voice,zero,", 1),
     "{table} line 2, field 'variant': expected a non-negative integer, got 'zero'"),
    (lambda t: t.replace("face_only", "face_alone", 1),
     "{table} line 3, field 'condition': unknown condition 'face_alone'"),
    (lambda t: t.replace("\n", "\n", 1).split("\n")[0] + "\n", "{table}: no prediction rows"),
])
def test_bad_table_exits_2_naming_file_and_column(edit, message, tmp_path, capsys):
    table = tmp_path / "predictions.csv"
    if edit is not None:
        S.write_table(table, S.simulate(0, S.null((0.5, 0.5, 0.5)), n_clips=4))
        table.write_text(edit(table.read_text()))
    code, err = run_cli(["--from-table", str(table), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and message.format(table=table) in err, err
    assert not (tmp_path / "o").exists()  # checked before anything is written


def test_bad_label_in_table_names_line_and_field(tmp_path, capsys):
    table = tmp_path / "predictions.csv"
    S.write_table(table, S.simulate(0, S.null((0.5, 0.5, 0.5)), n_clips=4))
    with open(table) as f:
        rows = list(csv.DictReader(f))
    rows[2]["predicted"] = "joy"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    code, err = run_cli(["--from-table", str(table), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{table} line 4, field 'predicted': unknown label 'joy'" in err, err


def test_model_required_only_to_run_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["--data", ".", "--out", "o"], capsys)
    assert code == 2 and "--model: required with --data or --manifest" in err
    code, err = run_cli(["--from-table", "t.csv", "--data", ".", "--out", "o"], capsys)
    assert code == 2 and "not allowed with argument" in err
