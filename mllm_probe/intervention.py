"""Modality-block interventions on the attention logits of the language model.

An `Intervention` names a block (query modality a, key modality b) and a layer range. Inside the
probe's registered attention function (`mllm_probe.capture.capture_attention`) it changes the
logits z_ij = q_i . k_j / sqrt(d) of the query positions i of modality a on the key positions j of
modality b, in the language-model layers of the range:

* ``factor`` f: z_ij -> f z_ij (an inverse temperature on the block, applied after any softcap
  and before the mask); f = 1 leaves the logits bit for bit as they are;
* ``knockout``: z_ij -> -inf after the mask, so each row is renormalised over the keys it may
  still see; a row that sees no other key gets zero weights (its attention output is 0).

This is the transformer side of the surrogate's B_ab, an inverse temperature per modality block
(docs/interventions.md). The command-line form is ``QUERY<-KEY:scale=F[:layers=A-B]`` or
``QUERY<-KEY:knockout[:layers=A-B]``, layers 0-based and inclusive (default: every layer).

`intervening` is the context in which a model's forward passes carry interventions: it routes the
model's attention through the capture function and follows the modality of every position from
the input ids (with or without a key/value cache). Importing this module needs no torch.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mllm_probe.bundle import DEFAULT_MODALITIES

_SPEC = re.compile(r"^\s*(\w+)\s*<-\s*(\w+)\s*:\s*(.+?)\s*$")


@dataclasses.dataclass(frozen=True)
class Intervention:
    """Block (``query`` <- ``key``, modality names) and its change in ``layers`` (first, last),
    inclusive, 0-based; None: every language layer. ``knockout`` or a logit ``factor`` > 0."""

    query: str
    key: str
    factor: float = 1.0
    knockout: bool = False
    layers: tuple[int, int] | None = None

    def __post_init__(self):
        for name in (self.query, self.key):
            if name not in DEFAULT_MODALITIES:
                raise ValueError(f"unknown modality {name!r} (expected one of "
                                 f"{', '.join(DEFAULT_MODALITIES)})")
        if not (isinstance(self.factor, (int, float)) and math.isfinite(self.factor)
                and self.factor > 0):
            raise ValueError(f"scale must be a finite number > 0, got {self.factor!r}")
        if self.knockout and self.factor != 1.0:
            raise ValueError("a knockout takes no scale")
        if self.layers is not None:
            lo, hi = self.layers
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
                raise ValueError(f"layers must be A-B with 0 <= A <= B, got {lo}-{hi}")

    @property
    def query_index(self) -> int:
        return DEFAULT_MODALITIES.index(self.query)

    @property
    def key_index(self) -> int:
        return DEFAULT_MODALITIES.index(self.key)

    def covers(self, layer: int) -> bool:
        """True if language layer ``layer`` lies in the range."""
        return self.layers is None or self.layers[0] <= layer <= self.layers[1]

    def spec(self) -> str:
        """The command-line form (``parse_intervention(x.spec()) == x``)."""
        change = "knockout" if self.knockout else f"scale={self.factor!r}"
        where = "" if self.layers is None else f":layers={self.layers[0]}-{self.layers[1]}"
        return f"{self.query}<-{self.key}:{change}{where}"

    def to_json(self) -> dict:
        return {"query": self.query, "key": self.key, "factor": self.factor,
                "knockout": self.knockout,
                "layers": None if self.layers is None else list(self.layers), "spec": self.spec()}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "<json>") -> Intervention:
        """Inverse of `to_json`; ValueError naming ``source`` on a malformed object."""
        try:
            layers = obj.get("layers")
            return cls(str(obj["query"]), str(obj["key"]), float(obj.get("factor", 1.0)),
                       bool(obj.get("knockout", False)),
                       None if layers is None else (int(layers[0]), int(layers[1])))
        except (KeyError, TypeError, IndexError, ValueError, AttributeError) as err:
            raise ValueError(f"{source}: field 'interventions': malformed entry {obj!r} "
                             f"({err})") from None

    def check_layers(self, num_layers: int) -> None:
        """ValueError if the range does not fit a model of ``num_layers`` language layers."""
        if self.layers is not None and self.layers[1] >= num_layers:
            raise ValueError(f"{self.spec()!r}: layers {self.layers[0]}-{self.layers[1]} outside "
                             f"the model's {num_layers} language layers (0-{num_layers - 1})")


def parse_intervention(text: str) -> Intervention:
    """``QUERY<-KEY:scale=F[:layers=A-B]`` or ``QUERY<-KEY:knockout[:layers=A-B]``."""
    match = _SPEC.match(text or "")
    if not match:
        raise ValueError(f"{text!r}: expected QUERY<-KEY:scale=F[:layers=A-B] or "
                         f"QUERY<-KEY:knockout[:layers=A-B]")
    query, key, rest = match.groups()
    factor, knockout, layers, seen = 1.0, False, None, set()
    for part in (p.strip() for p in rest.split(":")):
        name, _, value = part.partition("=")
        if name in seen:
            raise ValueError(f"{text!r}: {name!r} given twice")
        seen.add(name)
        if name == "knockout" and not value:
            knockout = True
        elif name == "scale" and value:
            try:
                factor = float(value)
            except ValueError:
                raise ValueError(f"{text!r}: scale {value!r} is not a number") from None
        elif name == "layers" and value:
            lo, sep, hi = value.partition("-")
            try:
                layers = (int(lo), int(hi if sep else lo))
            except ValueError:
                raise ValueError(f"{text!r}: layers {value!r} is not A-B (0-based)") from None
        else:
            raise ValueError(f"{text!r}: unknown part {part!r} (expected scale=F, knockout or "
                             f"layers=A-B)")
    if not ({"scale", "knockout"} & seen) or {"scale", "knockout"} <= seen:
        raise ValueError(f"{text!r}: give exactly one of scale=F or knockout")
    try:
        return Intervention(query, key, factor, knockout, layers)
    except ValueError as err:
        raise ValueError(f"{text!r}: {err}") from None


def describe(interventions: Sequence[Intervention]) -> str:
    """One string for a table cell: the specs joined by ';' ('' for none)."""
    return ";".join(i.spec() for i in interventions)


# ----------------------------------------------------------------------------- applying

class Intervening:
    """State of one `intervening` context: the interventions, the language layers of the model
    and the modality codes (B, T) of the positions seen so far (updated by a forward pre-hook)."""

    def __init__(self, interventions: tuple[Intervention, ...], layer_of: dict[int, int], spec):
        self.interventions = interventions
        self.layer_of = layer_of
        self.spec = spec
        self.modality: np.ndarray | None = None   # (B, T) codes of the sequence so far

    def follow(self, input_ids, attention_mask, cache) -> None:
        """Update the sequence modality from a forward call's ``input_ids`` (B, T)."""
        from mllm_probe.modality import token_modality

        if input_ids is None:
            return
        ids = input_ids.detach().cpu().numpy().reshape(-1, input_ids.shape[-1])
        new = np.stack([token_modality(row, self.spec) for row in ids])
        if attention_mask is not None and attention_mask.ndim == 2:
            total = int(attention_mask.shape[-1])
        else:
            total = new.shape[1] + (int(cache.get_seq_length()) if cache is not None else 0)
        past = total - new.shape[1]
        old = self.modality
        if past <= 0 or old is None:
            self.modality = new
            return
        if old.shape[0] != new.shape[0]:   # a shared prefix, repeated over the batch rows
            old = np.repeat(old[:1], new.shape[0], 0)
        known = old[:, :past]
        gap = past - known.shape[1]      # positions never seen: text (prompt and answer words)
        fill = np.full((new.shape[0], gap), DEFAULT_MODALITIES.index("text"), known.dtype)
        self.modality = np.concatenate([known, fill, new], 1)

    def blocks(self, module, batch: int, queries: int, keys: int, device):
        """[(intervention, query mask (B, Sq) bool, key mask (B, Sk) bool)] of the interventions
        acting on ``module``'s call, or [] (not a language layer, or none in range)."""
        import torch

        layer = self.layer_of.get(id(module))
        if layer is None:
            return []
        acting = [i for i in self.interventions if i.covers(layer)]
        if not acting:
            return []
        if self.modality is None:
            raise RuntimeError("intervention: no input ids seen before the attention call (the "
                               "model must be called with input_ids inside `intervening`)")
        mod = self.modality
        if mod.shape[0] != batch:
            mod = np.repeat(mod[:1], batch, 0)
        if mod.shape[1] < keys:
            raise RuntimeError(f"intervention: attention over {keys} keys but {mod.shape[1]} "
                               f"positions known")
        mod = torch.as_tensor(mod, device=device)
        out = []
        for i in acting:   # keys are the last Sk positions, queries the last Sq (cache, windows)
            out.append((i, mod[:, -queries:] == i.query_index, mod[:, -keys:] == i.key_index))
        return out


_ACTIVE: contextvars.ContextVar[Intervening | None] = contextvars.ContextVar(
    "xmodal_intervening", default=None)


def active() -> Intervening | None:
    """The `Intervening` state of the current context, or None."""
    return _ACTIVE.get()


def active_interventions() -> tuple[Intervention, ...]:
    state = _ACTIVE.get()
    return state.interventions if state is not None else ()


def _block(q, k, row_start: int, rows: int):
    """(B, 1, C, Sk) bool: rows row_start.. of the call that are queries of the block, on its
    keys."""
    return (q[:, row_start:row_start + rows, None] & k[:, None, :])[:, None]


def apply_to_logits(edits, logits, row_start: int):
    """Multiply the scaled blocks of ``logits`` (B, H, C, Sk), rows row_start.. of the call, in
    place (before the mask) by one (B, 1, C, Sk) factor for all heads (factors of blocks that
    overlap multiply). Returns ``logits``."""
    import torch

    scaled = [(i, q, k) for i, q, k in edits if not i.knockout]
    if not scaled:
        return logits
    factor = torch.ones((logits.shape[0], 1, *logits.shape[2:]), dtype=logits.dtype,
                        device=logits.device)
    for i, q, k in scaled:
        factor = torch.where(_block(q, k, row_start, logits.shape[2]), factor * i.factor, factor)
    return logits.mul_(factor)


def apply_knockout(edits, logits, row_start: int, mask=None):
    """Set the knocked-out blocks of masked ``logits`` (B, H, C, Sk) to -inf in place; returns
    (logits, dead (B, 1, C, 1) rows that see no key any more, or None). ``mask`` (B, 1, C, Sk),
    boolean or additive, marks the keys each row may see (None: every key)."""
    import torch

    knocked = None
    for i, q, k in edits:
        if i.knockout:
            block = _block(q, k, row_start, logits.shape[2])
            knocked = block if knocked is None else knocked | block
    if knocked is None:
        return logits, None
    logits.masked_fill_(knocked, -math.inf)
    if mask is None:
        open_ = ~knocked
    elif mask.dtype == torch.bool:
        open_ = mask & ~knocked
    else:
        open_ = (mask > torch.finfo(mask.dtype).min / 2) & ~knocked
    return logits, ~open_.any(-1, keepdim=True)


@contextlib.contextmanager
def intervening(target, interventions: Iterable[Intervention], spec=None):
    """Context in which the language-layer attention of ``target`` (a model or an `Adapter`)
    carries ``interventions``.

    Routes the model's attention through the capture function for the duration (an adapter's
    ``base_attn_implementation`` too; both restored after), and follows the modality of every
    position from the ``input_ids`` of each forward call (``spec``: the `ModalitySpec`, default
    the adapter's or the model config's). With no interventions it changes nothing. Yields the
    `Intervening` state (None without interventions).
    """
    interventions = tuple(interventions)
    if not interventions:
        yield None
        return
    from mllm_probe.capture import language_attention_modules, register_capture
    from mllm_probe.modality import spec_from_config

    adapter = target if hasattr(target, "base_attn_implementation") else None
    model = adapter.model if adapter is not None else target
    if spec is None:
        spec = adapter.spec if adapter is not None else spec_from_config(model.config)
    language = language_attention_modules(model)
    for i in interventions:
        i.check_layers(len(language))
    state = Intervening(interventions, {id(m): n for n, m in enumerate(language)}, spec)

    def pre_hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        state.follow(ids, kwargs.get("attention_mask"), cache)

    before = model.config._attn_implementation
    name = register_capture()
    model.set_attn_implementation(name)
    if adapter is not None:
        adapter_before, adapter.base_attn_implementation = adapter.base_attn_implementation, name
    handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    token = _ACTIVE.set(state)
    try:
        yield state
    finally:
        _ACTIVE.reset(token)
        handle.remove()
        model.set_attn_implementation(before)
        if adapter is not None:
            adapter.base_attn_implementation = adapter_before


__all__ = ["Intervening", "Intervention", "active", "active_interventions", "apply_knockout",
           "apply_to_logits", "describe", "intervening", "parse_intervention"]
