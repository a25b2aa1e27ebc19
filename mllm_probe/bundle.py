"""The attention-bundle file: modality-block attention of one model run, saved as safetensors.

Imports numpy, json and safetensors only (no torch), so `surrogate.fit` can read bundles.

Sizes: L language-model layers, H heads, M modalities, S sequence positions, Q query rows.

Arrays (float32 unless said):
- ``block_mass``    (L, H, M, M)  mean over the query rows of modality a of the attention mass on
                                  the keys of modality b; rows of modalities with no query row are
                                  0.
                                  Each row sums to <= 1 (1 when every query row sees some key).
- ``token_modality`` (S,) int32   modality index (into ``modalities``) of every position.
- ``query_index``   (Q,) int64    positions of the query rows (sorted, unique).
- ``row_mass``      (L, H, Q, M)  optional: attention mass of each query row on each key modality.
- ``visible_count`` (L, M, M)     optional: mean number of keys of modality b that a query row of
                                  modality a may attend to (causal order, sliding windows, padding).
                                  Uniform attention over the visible keys would put
                                  ``visible_count / visible_count.sum(-1)`` on each key modality.
- ``row_visible``   (L, Q, M)     optional: visible keys of each modality for each query row.
- ``entropy``       (L, H, M)     optional: mean attention entropy (nats) of the query rows of
                                  each modality (0 where a modality has no query row).
- ``full_map.<l>``  (H, Q, S)     optional: the attention rows of layer l, for requested layers.
- ``encoder.<name>.entropy`` (L_e, H_e)  optional: mean attention entropy (nats) of the query rows
                                  of an encoder's L_e layers and H_e heads.
- ``encoder.<name>.block_mass`` (L_e, H_e, M_e, M_e)  optional (version 2): the encoder's own
                                  modality blocks: mean over its valid query rows of the attention
                                  mass on the keys each row may see (own padding and keys outside
                                  a local window excluded). Rows sum to that visible mass (1 when
                                  no mass leaks onto masked keys).
- ``encoder.<name>.visible_count`` (L_e, M_e, M_e)  optional (version 2): mean number of keys a
                                  valid query row may see (the window of local attention).

Metadata (the safetensors header entry ``xmodal_bundle``, a JSON object):
``format`` ("xmodal-attention-bundle"), ``format_version`` (1), ``modalities`` (M names),
``layer_types`` (L strings, e.g. "full_attention", "sliding_attention"), ``query_set`` (how the
query rows were chosen, {"kind": "all" | "last" | "answer" | "indices" | ...}), and free-form
``model`` (id, revision, config_hash, architecture), ``prompt``, ``inputs`` (path, kind, sha256),
``versions`` (library versions), ``extra``; version 2 adds ``encoders`` ({name: {"modalities":
[M_e names], "layer_types": [L_e strings]}} for the encoders with blocks) and, optionally,
``interventions`` (the attention interventions the run carried, `mllm_probe.intervention`: a
list of {"query", "key", "factor", "knockout", "layers", "spec"}; absent or [] for none).

Format: safetensors (8-byte little-endian header length, JSON header, raw little-endian arrays),
read and written with ``safetensors.numpy`` (a core dependency; no torch). See docs/bundle.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

FORMAT = "xmodal-attention-bundle"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
METADATA_KEY = "xmodal_bundle"
DEFAULT_MODALITIES = ("text", "audio", "vision", "special")
#: Tolerance on row sums (float32 softmax rows summed in float32).
ROW_SUM_TOL = 1e-4


class BundleError(ValueError):
    """A bundle that does not parse or is inconsistent; the message names the file and field."""


@dataclasses.dataclass(frozen=True, eq=False)
class EncoderBlocks:
    """Modality blocks of one media encoder's self-attention (L_e layers, H_e heads, M_e
    modalities).

    block_mass: (L_e, H_e, M_e, M_e) mass of valid query rows on the keys they may see;
    visible_count: (L_e, M_e, M_e) mean number of those keys per query row.
    """

    modalities: tuple[str, ...]
    layer_types: tuple[str, ...]
    block_mass: np.ndarray
    visible_count: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Bundle:
    """One attention bundle in memory (see the module docstring for shapes)."""

    block_mass: np.ndarray
    modalities: tuple[str, ...]
    layer_types: tuple[str, ...]
    token_modality: np.ndarray
    query_index: np.ndarray
    query_set: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"kind": "indices"})
    row_mass: np.ndarray | None = None
    visible_count: np.ndarray | None = None
    row_visible: np.ndarray | None = None
    entropy: np.ndarray | None = None
    full_maps: Mapping[int, np.ndarray] = dataclasses.field(default_factory=dict)
    encoder_entropy: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    encoders: Mapping[str, EncoderBlocks] = dataclasses.field(default_factory=dict)
    model: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    prompt: str | None = None
    inputs: tuple[Mapping[str, Any], ...] = ()
    versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    interventions: tuple[Mapping[str, Any], ...] = ()

    @property
    def num_layers(self) -> int:
        return int(self.block_mass.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.block_mass.shape[1])

    def query_counts(self) -> np.ndarray:
        """(M,) number of query rows of each modality."""
        mods = self.token_modality[self.query_index]
        return np.bincount(mods, minlength=len(self.modalities))

    def uniform_mass(self) -> np.ndarray | None:
        """(L, M, M) block mass that uniform attention over the visible keys would give."""
        if self.visible_count is None:
            return None
        total = self.visible_count.sum(-1, keepdims=True)
        return np.divide(self.visible_count, total, out=np.zeros_like(self.visible_count),
                         where=total > 0)


def make_bundle(block_mass, modalities, layer_types, token_modality, query_index,
                **fields) -> Bundle:
    """Build and validate a bundle from plain arrays (e.g. a synthetic bundle for tests or fits)."""
    bundle = Bundle(
        block_mass=np.asarray(block_mass, dtype=np.float32),
        modalities=tuple(modalities),
        layer_types=tuple(layer_types),
        token_modality=np.asarray(token_modality, dtype=np.int32),
        query_index=np.asarray(query_index, dtype=np.int64),
        **_coerce_optional(fields),
    )
    validate_bundle(bundle, "<in memory>")
    return bundle


def _coerce_optional(fields: dict) -> dict:
    out = dict(fields)
    for name in ("row_mass", "visible_count", "row_visible", "entropy"):
        if out.get(name) is not None:
            out[name] = np.asarray(out[name], dtype=np.float32)
    if "full_maps" in out:
        out["full_maps"] = {int(k): np.asarray(v, dtype=np.float32)
                            for k, v in out["full_maps"].items()}
    if "encoder_entropy" in out:
        out["encoder_entropy"] = {str(k): np.asarray(v, dtype=np.float32)
                                  for k, v in out["encoder_entropy"].items()}
    if "encoders" in out:
        out["encoders"] = {str(k): EncoderBlocks(
            tuple(v.modalities), tuple(v.layer_types),
            np.asarray(v.block_mass, dtype=np.float32),
            np.asarray(v.visible_count, dtype=np.float32)) for k, v in out["encoders"].items()}
    for name in ("inputs", "interventions"):
        if name in out:
            out[name] = tuple(dict(i) for i in out[name])
    return out


# ----------------------------------------------------------------------------- validation

def _fail(source: str, field: str, message: str) -> BundleError:
    return BundleError(f"{source}: field {field!r}: {message}")


def _check_indices(source, field: str, a, dim: str, what: str, bound: int) -> int:
    """The length of ``a``, a 1-d integer array of ``what`` in [0, bound); else BundleError."""
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        raise _fail(source, field, f"expected 1 dimension ({dim},), got shape "
                                   f"{getattr(a, 'shape', None)}")
    _check_array(source, field, a, (a.shape[0],), dtype_kind="i")
    if a.shape[0] and (a.min() < 0 or a.max() >= bound):
        raise _fail(source, field, f"{what} must lie in [0, {bound}), got range "
                                   f"[{a.min()}, {a.max()}]")
    return a.shape[0]


def _check_array(source, field, arr, shape, *, dtype_kind="f", probability=False):
    if not isinstance(arr, np.ndarray):
        raise _fail(source, field, f"expected an array, got {type(arr).__name__}")
    if arr.dtype.kind != dtype_kind and not (dtype_kind == "i" and arr.dtype.kind == "u"):
        raise _fail(source, field, f"expected dtype kind {dtype_kind!r}, got {arr.dtype}")
    if arr.shape != tuple(shape):
        raise _fail(source, field, f"expected shape {tuple(shape)}, got {arr.shape}")
    if dtype_kind == "f":
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0].tolist()
            raise _fail(source, field, f"non-finite value (NaN or inf) at index {bad}")
        if np.any(arr < -ROW_SUM_TOL):
            bad = np.argwhere(arr < -ROW_SUM_TOL)[0].tolist()
            raise _fail(source, field, f"negative value {float(arr[tuple(bad)])} at index {bad}")
    if probability and arr.size:
        sums = arr.sum(-1)
        if np.any(sums > 1 + ROW_SUM_TOL):
            bad = np.argwhere(sums > 1 + ROW_SUM_TOL)[0].tolist()
            raise _fail(source, field,
                        f"row {bad} sums to {float(sums[tuple(bad)]):.6g} > 1 (attention mass)")


def validate_bundle(bundle: Bundle, source: str = "<in memory>") -> None:
    """Raise `BundleError` naming ``source`` and the field if ``bundle`` is inconsistent."""
    M = len(bundle.modalities)
    L = len(bundle.layer_types)
    if M == 0:
        raise _fail(source, "modalities", "empty list")
    if len(set(bundle.modalities)) != M or not all(isinstance(m, str) for m in bundle.modalities):
        raise _fail(source, "modalities", f"expected unique strings, got {list(bundle.modalities)}")
    if L == 0 or not all(isinstance(t, str) for t in bundle.layer_types):
        raise _fail(source, "layer_types", f"expected a non-empty list of strings, got "
                                           f"{list(bundle.layer_types)}")
    bm = bundle.block_mass
    if not isinstance(bm, np.ndarray) or bm.ndim != 4:
        raise _fail(source, "block_mass", f"expected 4 dimensions (L, H, M, M), got shape "
                                          f"{getattr(bm, 'shape', None)}")
    H = bm.shape[1]
    if H == 0:
        raise _fail(source, "block_mass", f"no heads: shape {bm.shape} has H = 0")
    _check_array(source, "block_mass", bm, (L, H, M, M), probability=True)
    S = _check_indices(source, "token_modality", bundle.token_modality, "S", "values", M)
    qi = bundle.query_index
    Q = _check_indices(source, "query_index", qi, "Q", "positions", S)
    if Q > 1 and np.any(np.diff(qi) <= 0):
        raise _fail(source, "query_index", "positions must be sorted and unique")
    if not isinstance(bundle.query_set, Mapping) or "kind" not in bundle.query_set:
        raise _fail(source, "query_set",
                    f"expected an object with a 'kind', got {bundle.query_set!r}")
    if bundle.row_mass is not None:
        _check_array(source, "row_mass", bundle.row_mass, (L, H, Q, M), probability=True)
    if bundle.visible_count is not None:
        _check_array(source, "visible_count", bundle.visible_count, (L, M, M))
    if bundle.row_visible is not None:
        _check_array(source, "row_visible", bundle.row_visible, (L, Q, M))
    if bundle.entropy is not None:
        _check_array(source, "entropy", bundle.entropy, (L, H, M))
    for layer, fm in bundle.full_maps.items():
        if not 0 <= int(layer) < L:
            raise _fail(source, f"full_map.{layer}", f"layer {layer} out of range [0, {L})")
        _check_array(source, f"full_map.{layer}", fm, (H, Q, S), probability=True)
    for name, ent in bundle.encoder_entropy.items():
        field = f"encoder.{name}.entropy"
        if not isinstance(ent, np.ndarray) or ent.ndim != 2:
            raise _fail(source, field, f"expected 2 dimensions (layers, heads), got shape "
                                       f"{getattr(ent, 'shape', None)}")
        _check_array(source, field, ent, ent.shape)
    for name, enc in bundle.encoders.items():
        _check_encoder(source, name, enc, bundle.encoder_entropy.get(name))
    if not all(isinstance(i, Mapping) and {"query", "key"} <= set(i) for i in bundle.interventions):
        raise _fail(source, "interventions", f"expected objects with 'query' and 'key', got "
                                             f"{list(bundle.interventions)!r}")


def _check_encoder(source: str, name: str, enc: EncoderBlocks, entropy) -> None:
    field = f"encoders.{name}"
    Me, Le = len(enc.modalities), len(enc.layer_types)
    if Me == 0 or not all(isinstance(m, str) for m in enc.modalities):
        raise _fail(source, field, f"expected modality names, got {list(enc.modalities)}")
    if Le == 0 or not all(isinstance(t, str) for t in enc.layer_types):
        raise _fail(source, field, f"expected layer types, got {list(enc.layer_types)}")
    bm = enc.block_mass
    if not isinstance(bm, np.ndarray) or bm.ndim != 4:
        raise _fail(source, f"encoder.{name}.block_mass",
                    f"expected 4 dimensions (L_e, H_e, M_e, M_e), got shape "
                    f"{getattr(bm, 'shape', None)}")
    He = bm.shape[1]
    _check_array(source, f"encoder.{name}.block_mass", bm, (Le, He, Me, Me), probability=True)
    _check_array(source, f"encoder.{name}.visible_count", enc.visible_count, (Le, Me, Me))
    if entropy is not None and entropy.shape != (Le, He):
        raise _fail(source, f"encoder.{name}.entropy", f"expected shape {(Le, He)} (the encoder's "
                                                       f"layers and heads), got {entropy.shape}")


# ----------------------------------------------------------------------------- file I/O

def save_bundle(path: str | os.PathLike, bundle: Bundle) -> None:
    """Validate ``bundle`` and write it to ``path`` (safetensors; written atomically)."""
    from safetensors.numpy import save

    from surrogate.files import atomic_write_bytes

    path = os.fspath(path)
    validate_bundle(bundle, path)
    arrays = {
        "block_mass": np.ascontiguousarray(bundle.block_mass, dtype=np.float32),
        "token_modality": np.ascontiguousarray(bundle.token_modality, dtype=np.int32),
        "query_index": np.ascontiguousarray(bundle.query_index, dtype=np.int64),
    }
    for name in ("row_mass", "visible_count", "row_visible", "entropy"):
        value = getattr(bundle, name)
        if value is not None:
            arrays[name] = np.ascontiguousarray(value, dtype=np.float32)
    for layer, fm in bundle.full_maps.items():
        arrays[f"full_map.{int(layer)}"] = np.ascontiguousarray(fm, dtype=np.float32)
    for name, ent in bundle.encoder_entropy.items():
        arrays[f"encoder.{name}.entropy"] = np.ascontiguousarray(ent, dtype=np.float32)
    for name, enc in bundle.encoders.items():
        arrays[f"encoder.{name}.block_mass"] = np.ascontiguousarray(enc.block_mass, np.float32)
        arrays[f"encoder.{name}.visible_count"] = np.ascontiguousarray(enc.visible_count,
                                                                        np.float32)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "modalities": list(bundle.modalities),
        "layer_types": list(bundle.layer_types),
        "query_set": dict(bundle.query_set),
        "model": dict(bundle.model),
        "prompt": bundle.prompt,
        "inputs": [dict(i) for i in bundle.inputs],
        "versions": dict(bundle.versions),
        "extra": dict(bundle.extra),
        "encoders": {name: {"modalities": list(enc.modalities),
                            "layer_types": list(enc.layer_types)}
                     for name, enc in bundle.encoders.items()},
    }
    if bundle.interventions:
        meta["interventions"] = [dict(i) for i in bundle.interventions]
    atomic_write_bytes(path, save(arrays,
                                  metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)}))


_ARRAY_FIELDS = {"block_mass", "token_modality", "query_index", "row_mass", "visible_count",
                 "row_visible", "entropy"}
_ENCODER_FIELDS = ("block_mass", "visible_count")


def _read_encoders(path: str, meta, arrays: dict) -> dict[str, EncoderBlocks]:
    """Encoder blocks from the ``encoders`` metadata and the ``encoder.<name>.*`` arrays."""
    if not isinstance(meta, dict):
        raise _fail(path, "encoders", f"expected an object, got {meta!r}")
    out = {}
    for name in sorted(set(meta) | set(arrays)):
        info, got = meta.get(name), arrays.get(name, {})
        if not isinstance(info, dict) or not all(
                isinstance(info.get(k), list) for k in ("modalities", "layer_types")):
            raise _fail(path, f"encoders.{name}", f"expected an object with lists 'modalities' "
                                                  f"and 'layer_types', got {info!r}")
        for field in _ENCODER_FIELDS:
            if field not in got:
                raise _fail(path, f"encoder.{name}.{field}", "array missing")
        out[name] = EncoderBlocks(tuple(info["modalities"]), tuple(info["layer_types"]),
                                  got["block_mass"], got["visible_count"])
    return out


def _read_interventions(path: str, value) -> tuple[dict, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
        raise _fail(path, "interventions", f"expected a list of objects, got {value!r}")
    return tuple(value)


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read and validate a bundle; raises `BundleError` naming the file and field on any defect."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BundleError(f"{path}: no such bundle file")
    try:
        with safe_open(path, framework="numpy") as f:
            header = f.metadata() or {}
            arrays = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (no __iter__)
    except Exception as err:  # safetensors raises its own error types for truncated/garbled files
        raise BundleError(f"{path}: not a readable safetensors bundle ({err})") from err
    if METADATA_KEY not in header:
        raise _fail(path, METADATA_KEY, "metadata entry missing (not an xmodal attention bundle)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise _fail(path, METADATA_KEY, f"invalid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise _fail(path, METADATA_KEY, "expected a JSON object")
    if meta.get("format") != FORMAT:
        raise _fail(path, "format", f"expected {FORMAT!r}, got {meta.get('format')!r}")
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:  # True == 1 in Python
        raise _fail(path, "format_version", f"unknown version {version!r} (this reader knows "
                                            f"{list(SUPPORTED_VERSIONS)})")
    for field in ("modalities", "layer_types"):
        if not isinstance(meta.get(field), list):
            raise _fail(path, field, f"expected a list, got {meta.get(field)!r}")
    for field in ("block_mass", "token_modality", "query_index"):
        if field not in arrays:
            raise _fail(path, field, "array missing")
    full_maps, encoder_entropy, encoder_arrays = {}, {}, {}
    for key, value in arrays.items():
        if key.startswith("full_map."):
            try:
                full_maps[int(key.split(".", 1)[1])] = value
            except ValueError as err:
                raise _fail(path, key, "layer suffix is not an integer") from err
        elif key.startswith("encoder.") and key.endswith(".entropy"):
            encoder_entropy[key[len("encoder."):-len(".entropy")]] = value
        elif key.startswith("encoder.") and key.rsplit(".", 1)[-1] in _ENCODER_FIELDS:
            name, field = key[len("encoder."):].rsplit(".", 1)
            encoder_arrays.setdefault(name, {})[field] = value
        elif key not in _ARRAY_FIELDS:
            raise _fail(path, key, "unknown array")
    encoders = _read_encoders(path, meta.get("encoders") or {}, encoder_arrays)
    bundle = Bundle(
        block_mass=arrays["block_mass"],
        modalities=tuple(meta["modalities"]),
        layer_types=tuple(meta["layer_types"]),
        token_modality=arrays["token_modality"],
        query_index=arrays["query_index"],
        query_set=meta.get("query_set") or {},
        row_mass=arrays.get("row_mass"),
        visible_count=arrays.get("visible_count"),
        row_visible=arrays.get("row_visible"),
        entropy=arrays.get("entropy"),
        full_maps=full_maps,
        encoder_entropy=encoder_entropy,
        encoders=encoders,
        model=meta.get("model") or {},
        prompt=meta.get("prompt"),
        inputs=tuple(meta.get("inputs") or ()),
        versions=meta.get("versions") or {},
        extra=meta.get("extra") or {},
        interventions=_read_interventions(path, meta.get("interventions")),
    )
    validate_bundle(bundle, path)
    return bundle


def bundles_equal(a: Bundle, b: Bundle, *, atol: float = 0.0) -> bool:
    """True if two bundles hold the same arrays (within ``atol``) and metadata."""
    def same(x, y):
        if x is None or y is None:
            return x is None and y is None
        return x.shape == y.shape and bool(np.allclose(x, y, atol=atol, rtol=0))

    if a.modalities != b.modalities or a.layer_types != b.layer_types:
        return False
    if dict(a.query_set) != dict(b.query_set) or dict(a.model) != dict(b.model):
        return False
    if a.prompt != b.prompt or [dict(i) for i in a.inputs] != [dict(i) for i in b.inputs]:
        return False
    if [dict(i) for i in a.interventions] != [dict(i) for i in b.interventions]:
        return False
    arrays = ("block_mass", "token_modality", "query_index", "row_mass", "visible_count",
              "row_visible", "entropy")
    if not all(same(getattr(a, n), getattr(b, n)) for n in arrays):
        return False
    if set(a.full_maps) != set(b.full_maps) or set(a.encoder_entropy) != set(b.encoder_entropy):
        return False
    if set(a.encoders) != set(b.encoders):
        return False
    for k, x in a.encoders.items():
        y = b.encoders[k]
        if (x.modalities, x.layer_types) != (y.modalities, y.layer_types) or not (
                same(x.block_mass, y.block_mass) and same(x.visible_count, y.visible_count)):
            return False
    return all(same(a.full_maps[k], b.full_maps[k]) for k in a.full_maps) and all(
        same(a.encoder_entropy[k], b.encoder_entropy[k]) for k in a.encoder_entropy)


__all__ = [
    "DEFAULT_MODALITIES",
    "FORMAT",
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "EncoderBlocks",
    "bundles_equal",
    "load_bundle",
    "make_bundle",
    "save_bundle",
    "validate_bundle",
]


# ----------------------------------------------------------------------------- fit targets

@dataclasses.dataclass(frozen=True, eq=False)
class BlockShares:
    """What a fit reads from a bundle: ``shares`` (L, M, M) row shares P*[l, a, b] among the kept
    ``modalities``, ``weight`` (L, M) 0/1 (a row without query rows or without mass on the kept
    modalities gets 0), ``token_counts`` (M,) tokens per kept modality, ``source`` (file)."""

    shares: np.ndarray
    weight: np.ndarray
    modalities: tuple[str, ...]
    token_counts: np.ndarray
    source: str = "<in memory>"
    surrogate: Mapping[str, Any] | None = None  # the writer's model, for bundles a surrogate wrote


def block_shares(bundle: Bundle, modalities=("audio", "vision"), heads=None,
                 source: str = "<in memory>") -> BlockShares:
    """The row shares of the kept ``modalities``, averaged over ``heads`` (indices, default all)
    and renormalised per row: P*[l, a, b] = m[l, a, b] / sum_{b' kept} m[l, a, b'].
    Raises BundleError naming ``source`` and the field on a mismatch."""
    modalities = tuple(modalities)
    if len(modalities) < 2 or len(set(modalities)) != len(modalities):
        raise BundleError(f"modalities must be >= 2 distinct names, got {list(modalities)}")
    missing = [m for m in modalities if m not in bundle.modalities]
    if missing:
        raise _fail(source, "modalities", f"{missing} not among the bundle's modalities "
                    f"{list(bundle.modalities)}")
    cols = [bundle.modalities.index(m) for m in modalities]
    mass = np.asarray(bundle.block_mass, np.float64)
    if heads is not None:
        heads = [int(h) for h in heads]
        bad = [h for h in heads if not 0 <= h < bundle.num_heads]
        if not heads or bad:
            raise _fail(source, "block_mass", f"heads {heads} must be non-empty indices in "
                        f"[0, {bundle.num_heads})")
        mass = mass[:, heads]
    sub = mass.mean(1)[:, cols][:, :, cols]  # (L, M, M)
    total = sub.sum(-1)
    counts = bundle.query_counts()[cols]
    weight = (total > 1e-6) & (counts > 0)[None, :]
    if not weight.any():
        raise _fail(source, "query_index", f"no query row of {list(modalities)} puts attention "
                    f"on these modalities (query set {dict(bundle.query_set)}); capture with a "
                    f"query set that includes them, e.g. --query all")
    shares = np.divide(sub, total[..., None], out=np.zeros_like(sub), where=weight[..., None])
    tokens = np.bincount(bundle.token_modality, minlength=len(bundle.modalities))[cols]
    hints = bundle.extra.get("surrogate") if isinstance(bundle.extra, Mapping) else None
    return BlockShares(shares=shares, weight=weight.astype(np.float64), modalities=modalities,
                       token_counts=tokens.astype(np.float64), source=source,
                       surrogate=hints if isinstance(hints, Mapping) else None)


def load_block_shares(path: str | os.PathLike, modalities=("audio", "vision"),
                      heads=None) -> BlockShares:
    """``block_shares`` of a bundle file."""
    path = os.fspath(path)
    return block_shares(load_bundle(path), modalities, heads, source=path)


def shares_bundle(shares, modalities, token_counts, *, text_share: float = 0.2,
                  num_heads: int = 2, head_jitter: float = 0.05,
                  extra: Mapping[str, Any] | None = None,
                  model: Mapping[str, Any] | None = None) -> Bundle:
    """A bundle in the probe's format whose kept ``modalities`` carry the row shares ``shares``
    (L, M, M) (e.g. a surrogate's modality attention): those rows are scaled by 1 -
    ``text_share`` and the rest goes to 4 text tokens; head h carries the shares with
    ``head_jitter`` (-1)^h min(P[..., 0], P[..., 1]) moved between the first two columns, so the
    head mean of an even ``num_heads`` and the renormalisation of ``block_shares`` give back
    ``shares``. ``token_counts`` (M,) tokens per kept modality; ``extra``: metadata."""
    shares = np.asarray(shares, np.float64)
    L, m = shares.shape[0], shares.shape[1]
    mods = DEFAULT_MODALITIES
    if len(modalities) != m or any(x not in mods for x in modalities):
        raise BundleError(f"modalities {list(modalities)} must be {m} of {list(mods)}")
    cols = [mods.index(x) for x in modalities]
    heads = []
    for h in range(num_heads):
        p = shares.copy()
        if num_heads > 1:
            d = head_jitter * (-1) ** h * np.minimum(p[..., 0], p[..., 1])
            p[..., 0] += d
            p[..., 1] -= d
        full = np.zeros((L, len(mods), len(mods)))
        for i, a in enumerate(cols):
            full[:, a, mods.index("text")] = text_share
            for j, b in enumerate(cols):
                full[:, a, b] = (1 - text_share) * p[:, i, j]
        heads.append(full)
    token_modality = np.concatenate(
        [np.zeros(4, int)] + [np.full(int(s), mods.index(x))
                              for s, x in zip(token_counts, modalities, strict=False)])
    return make_bundle(np.stack(heads, 1), mods, ("full_attention",) * L, token_modality,
                       np.flatnonzero(token_modality > 0), query_set={"kind": "synthetic"},
                       model=dict(model or {"id": "surrogate",
                                            "architecture": "xmodal-surrogate"}),
                       extra=dict(extra or {}))
