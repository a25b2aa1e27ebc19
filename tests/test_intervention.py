"""Modality-block interventions on tiny Qwen2.5-Omni-thinker and Gemma 3n builds: the spec
grammar, factor 1 bit-identical to no intervention, a scaled block equal to eager attention with
scaled logits, a knockout block exactly 0 with rows renormalised over the visible keys, layers
outside the range untouched, and deterministic changes of the model output."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from mllm_probe.capture import (
    CapturePlan,
    capturing,
    language_attention_modules,
    register_capture,
)
from mllm_probe.intervention import Intervention, intervening, parse_intervention
from mllm_probe.tiny import (
    tiny_gemma3n,
    tiny_qwen_omni_thinker,
)

TEXT, AUDIO, VISION = 0, 1, 2
REFERENCE = "xmodal_test_reference"


# ----------------------------------------------------------------------------- the grammar

@pytest.mark.parametrize("spec, expected", [
    ("audio<-vision:scale=0.5:layers=8-20", Intervention("audio", "vision", 0.5, False, (8, 20))),
    ("text<-audio:knockout", Intervention("text", "audio", knockout=True)),
    (" vision <- text : layers=3 : scale=2 ", Intervention("vision", "text", 2.0, False, (3, 3))),
])
def test_parse_round_trip(spec, expected):
    got = parse_intervention(spec)
    assert got == expected
    assert parse_intervention(got.spec()) == got
    assert Intervention.from_json(got.to_json()) == got


@pytest.mark.parametrize("spec, message", [
    ("audio<-vision", "expected QUERY<-KEY"),
    ("audio->vision:scale=2", "expected QUERY<-KEY"),
    ("voice<-vision:scale=2", "unknown modality 'voice'"),
    ("audio<-vision:scale=0", "scale must be a finite number > 0"),
    ("audio<-vision:scale=nan", "scale must be a finite number > 0"),
    ("audio<-vision:scale=x", "scale 'x' is not a number"),
    ("audio<-vision:knockout:scale=2", "exactly one of scale=F or knockout"),
    ("audio<-vision:layers=1-2", "exactly one of scale=F or knockout"),
    ("audio<-vision:scale=2:layers=5-3", "0 <= A <= B"),
    ("audio<-vision:scale=2:layers=a-b", "layers 'a-b' is not A-B"),
    ("audio<-vision:scale=2:heads=1", "unknown part 'heads=1'"),
    ("audio<-vision:scale=2:scale=3", "'scale' given twice"),
])
def test_parse_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_intervention(spec)


# ----------------------------------------------------------------------------- the reference

class ReferenceAttention:
    """Plain eager attention over whole (H, S, S) maps with the block changes written out
    directly from a fixed token modality: the test's independent reference."""

    def __init__(self, model, tm, interventions):
        self.layer_of = {id(m): n for n, m in enumerate(language_attention_modules(model))}
        self.tm = torch.as_tensor(tm)
        self.interventions = interventions
        self.maps = {}

    def __call__(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                 softcap=None, **kwargs):
        groups = getattr(module, "num_key_value_groups", 1)
        key = key.repeat_interleave(groups, 1)
        value = value.repeat_interleave(groups, 1)
        logits = query @ key.transpose(2, 3) * (scaling or module.head_dim ** -0.5)
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        layer = self.layer_of.get(id(module))
        knock = torch.zeros(logits.shape[-2:], dtype=torch.bool)
        for i in self.interventions if layer is not None else ():
            if i.layers is not None and not i.layers[0] <= layer <= i.layers[1]:
                continue
            block = (self.tm[:, None] == i.query_index) & (self.tm[None, :] == i.key_index)
            if i.knockout:
                knock |= block
            else:
                logits = torch.where(block, logits * i.factor, logits)
        if attention_mask is not None:
            logits = logits + attention_mask[:, :, :, :key.shape[2]]
        logits = logits.masked_fill(knock, -math.inf)
        weights = torch.softmax(logits, -1, dtype=torch.float32).nan_to_num(0.0)
        if layer is not None:
            self.maps[layer] = weights[0].double().numpy()
        return (weights @ value).transpose(1, 2).contiguous(), None


def reference_run(model, inputs, tm, interventions):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    ref = ReferenceAttention(model, tm, interventions)
    AttentionInterface.register(REFERENCE, ref)
    AttentionMaskInterface.register(REFERENCE, eager_mask)
    model.set_attn_implementation(REFERENCE)
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits
    model.set_attn_implementation("eager")
    return ref.maps, logits


def intervened_run(model, inputs, tm, interventions):
    """Logits and capture result (every row, full maps of every layer) under interventions."""
    model.set_attn_implementation(register_capture())
    layers = len(language_attention_modules(model))
    plan = CapturePlan(tm, np.arange(len(tm)), full_map_layers=frozenset(range(layers)))
    with torch.no_grad(), intervening(model, interventions), capturing(model, plan) as rec:
        logits = model(**inputs, use_cache=False).logits
    model.set_attn_implementation("eager")
    return logits, rec.result()


# ----------------------------------------------------------------------------- tiny models

@pytest.fixture(scope="module")
def qwen():
    return tiny_qwen_omni_thinker()


def check_exactness(model, inputs, tm, scaled, knocked):
    """The exactness claims for one model (see the module docstring)."""
    base_logits, base = intervened_run(model, inputs, tm, ())
    # factor 1: bit-identical output and capture
    one = Intervention(scaled.query, scaled.key, 1.0, False, scaled.layers)
    logits, res = intervened_run(model, inputs, tm, (one,))
    assert torch.equal(logits, base_logits)
    np.testing.assert_array_equal(res.block_mass, base.block_mass)
    first, last = scaled.layers
    for intervention in (scaled, knocked):
        logits, res = intervened_run(model, inputs, tm, (intervention,))
        maps, ref_logits = reference_run(model, inputs, tm, (intervention,))
        for layer, ref in maps.items():  # the scaled / knocked block as written out, every layer
            np.testing.assert_allclose(res.full_maps[layer], ref, atol=1e-6, err_msg=str(layer))
        assert (logits - ref_logits).abs().max().item() < 1e-5
        # layers before the range: bit for bit as without the intervention
        np.testing.assert_array_equal(res.block_mass[:first], base.block_mass[:first])
        np.testing.assert_array_equal(res.full_maps[0], base.full_maps[0])
        assert not np.array_equal(res.block_mass[first], base.block_mass[first])
        # a strong change moves the output, the same way twice
        again, _ = intervened_run(model, inputs, tm, (intervention,))
        assert torch.equal(again, logits)
        assert (logits - base_logits).abs().max().item() > 1e-4
    q, k = knocked.query_index, knocked.key_index
    rows = tm == q
    for layer in range(first, last + 1):
        full = res.full_maps[layer]                              # (H, S, S), the knockout run
        assert np.all(full[:, rows][:, :, tm == k] == 0.0)
        sums = full[:, rows].sum(-1)
        np.testing.assert_allclose(sums[sums > 0], 1.0, atol=1e-6)
        np.testing.assert_array_equal(res.block_mass[layer, :, q, k], 0.0)
    # layers in the range of the knockout with an audio-only visible row: zero row, no NaN
    assert np.isfinite(res.block_mass).all()


def test_qwen_thinker_interventions_are_exact(qwen):
    model, inputs, tm = qwen
    check_exactness(model, inputs, tm, Intervention("text", "audio", 4.0, False, (1, 2)),
                    Intervention("text", "audio", knockout=True, layers=(1, 2)))


def test_knockout_of_the_only_visible_block_gives_zero_rows(qwen):
    model, inputs, tm = qwen
    # audio<-audio: the first audio row sees text/special keys besides itself; knocking out text
    # and special for audio rows leaves audio only; knocking out audio too leaves nothing
    ko = tuple(Intervention("audio", key, knockout=True, layers=(0, 0))
               for key in ("text", "audio", "special"))
    logits, res = intervened_run(model, inputs, tm, ko)
    assert torch.isfinite(logits).all()
    np.testing.assert_array_equal(res.full_maps[0][:, tm == AUDIO], 0.0)
    assert np.all(res.full_maps[0][:, tm == TEXT].sum(-1) > 0.999)


def test_cached_decoding_follows_the_modality_of_each_position(qwen):
    """A forward pass in two steps (prefix, then 3 text tokens with the key/value cache) gives the
    intervened logits of the one-pass run: the context follows positions across calls."""
    model, inputs, tm = qwen
    ko = (Intervention("text", "audio", 3.0, False, (0, 3)),)
    full, _ = intervened_run(model, inputs, tm, ko)
    split = inputs["input_ids"].shape[1] - 3
    head = dict(inputs, input_ids=inputs["input_ids"][:, :split],
                attention_mask=inputs["attention_mask"][:, :split])
    ids = inputs["input_ids"]
    positions, _ = model.get_rope_index(ids, inputs["image_grid_thw"], None,
                                        inputs["attention_mask"], False, torch.tensor([30]), None)
    with torch.no_grad(), intervening(model, ko):
        out = model(**head, use_cache=True)
        tail = model(input_ids=ids[:, split:], attention_mask=inputs["attention_mask"],
                     position_ids=positions[:, :, split:], cache=out.cache, use_cache=True)
    np.testing.assert_allclose(tail.logits.numpy(), full[:, split:].numpy(), atol=1e-5)


def test_layer_range_beyond_the_model_is_refused(qwen):
    model, _, _ = qwen
    with pytest.raises(ValueError, match=r"layers 2-9 outside the model's 4 language layers"):
        with intervening(model, [parse_intervention("text<-audio:scale=2:layers=2-9")]):
            pass
    assert model.config._attn_implementation == "eager"


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("timm", reason="Gemma 3n's vision tower is timm (needs torchvision)")
    return tiny_gemma3n()


@pytest.mark.slow
def test_gemma3n_interventions_are_exact(gemma):
    check_exactness(*gemma, Intervention("text", "audio", 0.25, False, (1, 2)),
                    Intervention("text", "audio", knockout=True, layers=(1, 2)))


@pytest.mark.slow
def test_gemma3n_token_by_token_decoding_with_sliding_windows(gemma):
    """Decoding one token at a time after a cached prefix (sliding layers keep 6 keys) gives the
    one-pass intervened logits: the keys of a call are the last positions of the sequence."""
    model, inputs, _ = gemma
    ids, split = inputs["input_ids"], 20
    edits = [parse_intervention("text<-audio:scale=5"), parse_intervention("text<-vision:knockout")]
    with torch.no_grad(), intervening(model, edits):
        full = model(**inputs, use_cache=False).logits
        out = model(**dict(inputs, input_ids=ids[:, :split],
                           attention_mask=inputs["attention_mask"][:, :split]), use_cache=True)
        for t in range(split, ids.shape[1]):
            out = model(input_ids=ids[:, t:t + 1],
                        attention_mask=inputs["attention_mask"][:, :t + 1],
                        cache=out.cache, use_cache=True)
            assert (out.logits[0, -1] - full[0, t]).abs().max().item() < 1e-5, t
    model.set_attn_implementation("eager")
    with torch.no_grad():
        plain = model(**inputs, use_cache=False).logits
    assert (plain - full).abs().max().item() > 0.1   # the interventions act


# ----------------------------------------------------------------------------- records

def test_bundle_records_interventions(tmp_path):
    from mllm_probe.bundle import BundleError, load_bundle, make_bundle, save_bundle

    ko = Intervention("text", "audio", knockout=True, layers=(0, 1))
    fields = dict(block_mass=np.full((2, 1, 4, 4), 0.25), modalities=("text", "audio", "vision",
                  "special"), layer_types=("full_attention",) * 2, token_modality=[0, 1, 2, 3],
                  query_index=[3])
    b = make_bundle(*fields.values(), interventions=[ko.to_json()])
    save_bundle(tmp_path / "b.bundle", b)
    back = load_bundle(tmp_path / "b.bundle")
    assert [Intervention.from_json(i) for i in back.interventions] == [ko]
    save_bundle(tmp_path / "a.bundle", make_bundle(*fields.values()))
    assert load_bundle(tmp_path / "a.bundle").interventions == ()
    with pytest.raises(BundleError, match="field 'interventions'"):
        make_bundle(*fields.values(), interventions=[{"spec": "no block"}])


def test_tables_without_the_intervention_column_still_read_and_resume(tmp_path):
    import csv

    from mllm_probe.emotion.table import COLUMNS, OPTIONAL_COLUMNS, PredictionTable, read_table

    LEGACY_COLUMNS = [c for c in COLUMNS if c not in OPTIONAL_COLUMNS]

    path = tmp_path / "predictions.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, LEGACY_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerow({c: "x" for c in LEGACY_COLUMNS} | {"clip": "c1", "condition": "face_only",
                                                       "variant": "0"})
    (tmp_path / "predictions.meta.json").write_text('{"model": "m"}')
    rows = read_table(path)
    assert len(rows) == 1 and rows[0]["intervention"] == "" and rows[0]["clip"] == "c1"
    table = PredictionTable(path, {"model": "m"}, 1, resume=True)   # rewritten with the column
    assert table.done == {("c1", "face_only")}
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    table.append([{"clip": "c2", "condition": "face_only", "variant": 0}])
    assert [r["intervention"] for r in read_table(path)] == ["", ""]
