"""Attractor statistics on hand-made prediction tables with known answers (numpy only)."""

import numpy as np
import pytest

from mllm_probe.emotion import attractors as A
from mllm_probe.emotion.prompts import LABELS


def row(clip, intended, predicted, forbidden=(), perceived=(), condition="face_voice",
        variant=0):
    return {"clip": clip, "condition": condition, "variant": str(variant),
            "intended": intended, "predicted": predicted, "forbidden": ":".join(forbidden),
            "perceived": ":".join(perceived), "generated_label": ""}


# c1 (angry, perceived angry or fear) and c2 (sad, no votes): known errors
#   angry -> neutral, happy, sad; sad -> neutral (twice), happy
TABLE = [
    row("c1", "angry", "angry", (), ("angry", "fear")),
    row("c1", "angry", "neutral", ("angry",), ("angry", "fear"), variant=1),
    row("c1", "angry", "happy", ("angry", "neutral"), ("angry", "fear"), variant=2),
    row("c1", "angry", "sad", ("angry", "neutral", "happy"), ("angry", "fear"), variant=3),
    row("c2", "sad", "neutral"),
    row("c2", "sad", "happy", ("neutral",), variant=4),
    row("c2", "sad", "sad", ("neutral", "happy"), variant=5),
    row("c2", "sad", "neutral", ("sad",), variant=6),
]


def idx(label):
    return LABELS.index(label)


def test_confusion_and_accuracy():
    p = A.from_rows(TABLE)
    conf = A.confusion(p.intended, p.predicted)
    expected = np.zeros((6, 6), int)
    for t, q, n in [("angry", "angry", 1), ("angry", "neutral", 1), ("angry", "happy", 1),
                    ("angry", "sad", 1), ("sad", "neutral", 2), ("sad", "happy", 1),
                    ("sad", "sad", 1)]:
        expected[idx(t), idx(q)] = n
    np.testing.assert_array_equal(conf, expected)
    acc = A.accuracy(p)
    assert acc["intended"] == 2 / 8 and acc["intended_unperturbed"] == 1 / 2
    assert acc["intended_allowed"] == 2 / 4   # c1 v0 and c2 v0, v4, v5 allow the intended label
    assert acc["perceived"] == 1 / 4          # only c1 has votes; 1 of its 4 rows is in the set


def test_error_graph_edges_and_pruning():
    p = A.from_rows(TABLE)
    conf = A.confusion(p.intended, p.predicted)
    edges = {(e["source"], e["target"]): (e["count"], e["share"])
             for e in A.error_graph(conf, min_share=0.3)}
    assert edges == {("angry", "neutral"): (1, pytest.approx(1 / 3)),
                     ("angry", "happy"): (1, pytest.approx(1 / 3)),
                     ("angry", "sad"): (1, pytest.approx(1 / 3)),
                     ("sad", "neutral"): (2, pytest.approx(2 / 3)),
                     ("sad", "happy"): (1, pytest.approx(1 / 3))}
    assert all(s != t for s, t in edges)  # no self-loops (the correct angry and sad rows)
    pruned = A.error_graph(conf, min_share=0.4)
    assert [(e["source"], e["target"]) for e in pruned] == [("sad", "neutral")]
    assert A.error_graph(conf, min_share=0.3, min_count=2) == pruned
    strength = A.attractor_strength(conf)
    np.testing.assert_allclose(strength[[idx("neutral"), idx("happy"), idx("sad")]],
                               [3 / 6, 2 / 6, 1 / 6])
    assert strength.sum() == pytest.approx(1.0)


def test_hierarchy_follows_the_fallbacks():
    h = A.hierarchy(A.from_rows(TABLE))
    # level 1: 6 errors, 3 on neutral; level 2 (neutral forbidden): 3 errors, 2 on happy;
    # level 3 (neutral and happy forbidden): 1 error, on sad; no row forbids all three
    assert [(x["label"], x["errors"]) for x in h] == [("neutral", 6), ("happy", 3), ("sad", 1)]
    assert [x["share"] for x in h] == pytest.approx([1 / 2, 2 / 3, 1.0])


def test_js_distance_base_2():
    from scipy.spatial.distance import jensenshannon

    assert A.js_distance([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-12)
    assert A.js_distance([1, 0, 0, 0], [0, 2, 3, 0]) == pytest.approx(1.0)
    assert np.isnan(A.js_distance([0, 0], [1, 0]))
    rng = np.random.default_rng(0)
    p, q = rng.random((5, 30)), rng.random((5, 30))
    ref = [jensenshannon(a, b, base=2) for a, b in zip(p, q, strict=False)]
    np.testing.assert_allclose(A.js_distance(p, q), ref, rtol=1e-10)
    # in nats the divergence of disjoint distributions is ln 2: distance^2 * ln 2
    assert A.js_distance([1, 0], [0, 1]) ** 2 * np.log(2) == pytest.approx(np.log(2))


def _conditions_table(fo_like_fv: bool):
    """4 clips; face_voice errors equal face_only's (or voice_only's), the other is disjoint."""
    rows = []
    for c, intended in enumerate(["angry", "sad", "happy", "fear"]):
        a, b = ("neutral", "disgust") if intended != "neutral" else ("happy", "disgust")
        same, other = (a, b)
        for cond, pred in (("face_voice", same),
                           ("face_only", same if fo_like_fv else other),
                           ("voice_only", other if fo_like_fv else same)):
            rows.append(row(f"c{c}", intended, pred, condition=cond))
    return A.from_rows(rows)


@pytest.mark.parametrize("fo_like_fv, verdict", [(True, "supported"), (False, "contradicted")])
def test_bootstrap_distances_and_claim(fo_like_fv, verdict):
    conds = ("face_voice", "face_only", "voice_only")
    p = _conditions_table(fo_like_fv)
    clips, counts = A.clip_error_counts(p, conds)
    assert counts.shape == (4, 3, 30) and list(clips) == ["c0", "c1", "c2", "c3"]
    dist = A.bootstrap_distances(counts, conds, seed=1, n_boot=200)
    near, far = (("face_voice|face_only", "face_voice|voice_only") if fo_like_fv
                 else ("face_voice|voice_only", "face_voice|face_only"))
    assert dist[near]["distance"] == 0 and (dist[near]["low"], dist[near]["high"]) == (0, 0)
    assert dist[far]["distance"] == pytest.approx(1) and dist[far]["low"] == pytest.approx(1)
    claim = A.claim_test(counts, conds, seed=1, n_boot=200)
    assert claim["verdict"] == verdict
    assert claim["delta"] == pytest.approx(1 if fo_like_fv else -1)
    assert A.claim_test(counts[:, :2], conds[:2], seed=1)["verdict"] == "not testable"


def test_bootstrap_is_reproducible_from_its_seed():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, (12, 3, 30))
    conds = ("face_voice", "face_only", "voice_only")
    a = A.bootstrap_distances(counts, conds, seed=7, n_boot=100)
    b = A.bootstrap_distances(counts, conds, seed=7, n_boot=100)
    c = A.bootstrap_distances(counts, conds, seed=8, n_boot=100)
    for k in a:
        np.testing.assert_array_equal(a[k]["samples"], b[k]["samples"])
        assert 0 <= a[k]["low"] <= a[k]["high"] <= 1
    assert any(not np.array_equal(a[k]["samples"], c[k]["samples"]) for k in a)


def test_analyze_is_json_ready():
    import json

    stats = A.analyze(A.from_rows(TABLE), ["face_voice"], seed=0, n_boot=50, min_share=0.4)
    json.dumps(stats)
    per = stats["per_condition"]["face_voice"]
    assert per["errors"] == 6 and per["hierarchy"][0]["label"] == "neutral"
    assert stats["claim"]["verdict"] == "not testable"


def test_js_distance_properties():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    counts = st.lists(st.integers(0, 20), min_size=6, max_size=6).filter(lambda c: sum(c) > 0)

    @settings(max_examples=60, deadline=None)
    @given(counts, counts, st.integers(1, 5))
    def check(p, q, scale):
        d = float(A.js_distance(p, q))
        assert 0 <= d <= 1 + 1e-12
        assert d == pytest.approx(float(A.js_distance(q, p)), abs=1e-12)      # symmetric
        assert float(A.js_distance(p, [scale * x for x in p])) == pytest.approx(0, abs=1e-7)
        if not any(a and b for a, b in zip(p, q, strict=False)):                      # disjoint
            assert d == pytest.approx(1.0)

    check()
