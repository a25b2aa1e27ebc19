"""The attention-bundle file format: round trip, validation, corrupted files, no torch import."""

import dataclasses
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from mllm_probe.bundle import (
    FORMAT_VERSION,
    METADATA_KEY,
    Bundle,
    BundleError,
    EncoderBlocks,
    bundles_equal,
    load_bundle,
    make_bundle,
    save_bundle,
    validate_bundle,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic(L=3, H=2, S=10, seed=0, **overrides) -> Bundle:
    """A valid bundle from plain numpy arrays: random attention rows reduced to 4 modalities."""
    rng = np.random.default_rng(seed)
    tm = np.array([3, 0, 0, 1, 1, 1, 2, 2, 3, 0][:S], dtype=np.int32)
    qi = np.array([1, 5, S - 1])
    weights = rng.random((L, H, S, S))
    weights /= weights.sum(-1, keepdims=True)
    onehot = np.eye(4)[tm]
    rows = weights[:, :, qi] @ onehot                     # (L, H, Q, M)
    block = np.zeros((L, H, 4, 4))
    counts = np.bincount(tm[qi], minlength=4)
    for r, q in enumerate(qi):
        block[:, :, tm[q]] += rows[:, :, r] / counts[tm[q]]
    fields = dict(
        query_set={"kind": "indices", "positions": qi.tolist()}, row_mass=rows,
        visible_count=np.ones((L, 4, 4)), row_visible=np.ones((L, len(qi), 4)),
        entropy=np.ones((L, H, 4)), full_maps={1: weights[1][:, qi]},
        encoder_entropy={"audio_tower": np.ones((2, 4))},
        encoders={"audio_tower": EncoderBlocks(("audio",), ("local_causal_attention",) * 2,
                                               np.ones((2, 4, 1, 1)), np.full((2, 1, 1), 3.5))},
        model={"id": "synthetic", "revision": None, "config_hash": "0" * 64},
        prompt="what emotion?", inputs=({"kind": "audio", "path": "a.wav", "sha256": "ab"},),
        versions={"numpy": np.__version__}, extra={"note": "test"})
    fields.update(overrides)
    return make_bundle(block, ("text", "audio", "vision", "special"),
                       ["full_attention", "sliding_attention", "full_attention"][:L], tm, qi,
                       **fields)


def test_round_trip_keeps_every_field(tmp_path):
    bundle = synthetic()
    path = tmp_path / "b.bundle"
    save_bundle(path, bundle)
    loaded = load_bundle(path)
    assert bundles_equal(bundle, loaded)
    assert loaded.full_maps[1].shape == (2, 3, 10)
    assert loaded.encoder_entropy["audio_tower"].shape == (2, 4)
    enc = loaded.encoders["audio_tower"]
    assert enc.modalities == ("audio",) and enc.layer_types == ("local_causal_attention",) * 2
    assert enc.block_mass.shape == (2, 4, 1, 1) and float(enc.visible_count[1, 0, 0]) == 3.5
    assert loaded.inputs[0]["sha256"] == "ab" and loaded.prompt == "what emotion?"
    np.testing.assert_array_equal(loaded.query_counts(), [2, 1, 0, 0])
    # mean row mass of each query modality rows sums to 1 (random rows are fully visible)
    np.testing.assert_allclose(loaded.block_mass[:, :, [0, 1]].sum(-1), 1, atol=1e-6)
    np.testing.assert_array_equal(loaded.block_mass[:, :, [2, 3]], 0)
    assert not bundles_equal(bundle, synthetic(seed=1))


def test_minimal_bundle_from_numpy(tmp_path):
    """The surrogate writes synthetic bundles from a block matrix and a token layout only."""
    block = np.full((2, 1, 2, 2), 0.5)
    bundle = make_bundle(block, ["audio", "vision"], ["full_attention"] * 2, [0, 0, 1, 1], [0, 3])
    save_bundle(tmp_path / "m.bundle", bundle)
    loaded = load_bundle(tmp_path / "m.bundle")
    assert loaded.row_mass is None and loaded.full_maps == {}
    assert loaded.modalities == ("audio", "vision")
    np.testing.assert_array_equal(loaded.block_mass, block.astype(np.float32))


def test_uniform_mass_from_visible_counts():
    counts = np.zeros((3, 4, 4))
    counts[:, 0] = [3, 1, 0, 0]
    u = synthetic(visible_count=counts).uniform_mass()
    np.testing.assert_allclose(u[:, 0], [[0.75, 0.25, 0, 0]] * 3)
    np.testing.assert_array_equal(u[:, 1], 0)


@pytest.mark.parametrize("change, field", [
    (dict(block_mass=np.full((3, 2, 4, 4), np.nan)), "block_mass"),
    (dict(block_mass=np.full((3, 2, 4, 4), 0.3)), "block_mass"),        # rows sum to 1.2
    (dict(row_mass=np.zeros((3, 2, 5, 4))), "row_mass"),               # wrong Q
    (dict(token_modality=np.full(10, 7, dtype=np.int32)), "token_modality"),
    (dict(query_index=np.array([5, 1, 9])), "query_index"),
    (dict(layer_types=("full_attention",)), "block_mass"),            # L mismatch
    (dict(full_maps={7: np.zeros((2, 3, 10))}), "full_map.7"),
])
def test_invalid_bundles_are_refused_with_the_field(change, field, tmp_path):
    import dataclasses

    bad = dataclasses.replace(synthetic(), **change)
    with pytest.raises(BundleError, match=f"b.bundle: field '{field}'"):
        save_bundle(tmp_path / "b.bundle", bad)
    assert not (tmp_path / "b.bundle").exists()


def _rewrite_header(path, edit):
    """Edit the JSON header of a safetensors file in place (as a corrupted writer would)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def _set_meta(key, value):
    def edit(header):
        meta = json.loads(header["__metadata__"][METADATA_KEY])
        meta[key] = value
        header["__metadata__"][METADATA_KEY] = json.dumps(meta)
    return edit


def test_corrupted_files_raise_clear_errors(tmp_path):
    good = tmp_path / "good.bundle"
    save_bundle(good, synthetic())
    raw = good.read_bytes()

    truncated = tmp_path / "truncated.bundle"
    truncated.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(BundleError, match="truncated.bundle: not a readable safetensors"):
        load_bundle(truncated)

    garbage = tmp_path / "garbage.bundle"
    garbage.write_bytes(b"not a bundle at all")
    with pytest.raises(BundleError, match="garbage.bundle"):
        load_bundle(garbage)

    version = tmp_path / "version.bundle"
    version.write_bytes(raw)
    _rewrite_header(version, _set_meta("format_version", FORMAT_VERSION + 98))
    with pytest.raises(BundleError, match="version.bundle: field 'format_version': unknown "
                                          f"version {FORMAT_VERSION + 98}"):
        load_bundle(version)
    _rewrite_header(version, _set_meta("format_version", True))  # True == 1, still refused
    with pytest.raises(BundleError, match="format_version': unknown version True"):
        load_bundle(version)

    nan = tmp_path / "nan.bundle"
    nan.write_bytes(raw)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    start = 8 + n + header["entropy"]["data_offsets"][0]
    data = bytearray(nan.read_bytes())
    data[start:start + 4] = np.float32(np.nan).tobytes()
    nan.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="nan.bundle: field 'entropy': non-finite"):
        load_bundle(nan)

    shape = tmp_path / "shape.bundle"
    shape.write_bytes(raw)

    def shrink(header):  # claim row_visible is (3, 4, 3) over the same bytes: wrong Q and M
        header["row_visible"]["shape"] = [3, 4, 3]
    _rewrite_header(shape, shrink)
    with pytest.raises(BundleError, match="shape.bundle: field 'row_visible': expected shape"):
        load_bundle(shape)

    layers = tmp_path / "layers.bundle"
    layers.write_bytes(raw)
    _rewrite_header(layers, _set_meta("layer_types", ["full_attention"]))
    with pytest.raises(BundleError, match="layers.bundle: field 'block_mass': expected shape"):
        load_bundle(layers)

    foreign = tmp_path / "foreign.bundle"
    foreign.write_bytes(raw)
    _rewrite_header(foreign, lambda h: h["__metadata__"].pop(METADATA_KEY))
    with pytest.raises(BundleError, match=f"foreign.bundle: field '{METADATA_KEY}'"):
        load_bundle(foreign)

    with pytest.raises(BundleError, match="missing.bundle: no such bundle file"):
        load_bundle(tmp_path / "missing.bundle")
    assert load_bundle(good).num_layers == 3  # the intact file still loads


def test_bundle_module_imports_neither_torch_nor_transformers():
    code = ("import sys, mllm_probe, mllm_probe.bundle, mllm_probe.modality; "
            "bad = [m for m in ('torch', 'transformers', 'jax') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT}, check=True)
    assert out.stdout.strip() == ""


def test_encoder_blocks_are_checked(tmp_path):
    with pytest.raises(BundleError, match="field 'encoder.audio_tower.block_mass': expected shape"):
        synthetic(encoders={"audio_tower": EncoderBlocks(
            ("audio",), ("full_attention",) * 3, np.ones((2, 4, 1, 1)), np.ones((2, 1, 1)))})
    with pytest.raises(BundleError, match="encoder.audio_tower.block_mass': row .* sums to 2"):
        synthetic(encoders={"audio_tower": EncoderBlocks(
            ("audio",), ("full_attention",) * 2, np.full((2, 4, 1, 1), 2.0), np.ones((2, 1, 1)))})
    path = tmp_path / "b.bundle"
    save_bundle(path, synthetic())
    _rewrite_header(path, _set_meta("encoders", {}))  # arrays without their modalities
    with pytest.raises(BundleError, match="field 'encoders.audio_tower': expected an object"):
        load_bundle(path)


def test_core_install_reads_bundles_without_torch(tmp_path):
    """A core install (no probe extra) reads bundles: safetensors is a core dependency, and the
    reader works with torch and transformers made unimportable."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert any(d.startswith("safetensors") for d in project["dependencies"])
    path = tmp_path / "b.bundle"
    save_bundle(path, synthetic())
    code = ("import sys; sys.modules.update(torch=None, transformers=None); "
            "from mllm_probe.bundle import load_bundle; "
            f"b = load_bundle({str(path)!r}); print(b.num_layers, sorted(b.encoders))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT}, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3 ['audio_tower']"


def test_zero_heads_is_named_as_such():
    good = synthetic()
    empty = dataclasses.replace(good, block_mass=good.block_mass[:, :0])
    with pytest.raises(BundleError, match="block_mass.*no heads"):
        validate_bundle(empty, "zero.bundle")
