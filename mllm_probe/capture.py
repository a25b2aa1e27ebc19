"""Attention capture through a registered transformers attention function, reduced on the fly.

`capture_attention` computes eager attention (same arithmetic as transformers' eager path) in
blocks of query rows and, while a `capturing` context is active, reduces each block at once to
modality masses; the full (heads, S, S) map of a layer is never held, and nothing of size S x S
outlives the layer call, so peak memory does not grow with the number of layers.

Sizes: L language-model layers, H heads, M modalities, S positions, Q query rows.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import re

import numpy as np
import torch

from mllm_probe import intervention

#: Name under which the capture function is registered with transformers.
CAPTURE_IMPLEMENTATION = "xmodal_capture"
#: Default cap on the elements of one block of attention weights (batch x heads x rows x keys).
DEFAULT_CHUNK_ELEMENTS = 1 << 24


@dataclasses.dataclass(frozen=True, eq=False)
class CapturePlan:
    """What to record: token modality (S,), query rows (Q,) and layers whose rows are kept whole."""

    token_modality: np.ndarray
    query_index: np.ndarray
    num_modalities: int = 4
    full_map_layers: frozenset[int] = frozenset()
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS

    def __post_init__(self):
        tm = np.asarray(self.token_modality)
        qi = np.asarray(self.query_index)
        if tm.ndim != 1 or tm.size == 0:
            raise ValueError(f"token_modality must have shape (S,) with S > 0, got {tm.shape}")
        if tm.min() < 0 or tm.max() >= self.num_modalities:
            raise ValueError(f"token_modality values must lie in [0, {self.num_modalities})")
        if qi.ndim != 1 or qi.size == 0:
            raise ValueError(f"query_index must have shape (Q,) with Q > 0, got {qi.shape}")
        if qi.min() < 0 or qi.max() >= tm.size or np.any(np.diff(qi) <= 0):
            raise ValueError(f"query_index must be sorted unique positions in [0, {tm.size}), "
                             f"got {qi.tolist()[:8]}...")
        if self.chunk_elements < 1:
            raise ValueError(f"chunk_elements must be >= 1, got {self.chunk_elements}")


@dataclasses.dataclass(frozen=True, eq=False)
class CaptureResult:
    """Reduced attention of one forward pass (numpy, float32); shapes as in `mllm_probe.bundle`."""

    block_mass: np.ndarray      # (L, H, M, M)
    row_mass: np.ndarray        # (L, H, Q, M)
    visible_count: np.ndarray   # (L, M, M)
    row_visible: np.ndarray     # (L, Q, M)
    entropy: np.ndarray         # (L, H, M)
    full_maps: dict[int, np.ndarray]         # layer -> (H, Q, S)
    encoder_entropy: dict[str, np.ndarray]   # encoder name -> (layers, heads)
    encoder_block_mass: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    #: encoder name -> (L_e, H_e, 1, 1) mass of valid query rows on the keys they may see
    encoder_visible_count: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    #: encoder name -> (L_e, 1, 1) mean number of keys a valid query row may see


# ----------------------------------------------------------------------------- registration

def register_capture() -> str:
    """Register the capture attention (and the eager mask builder) with transformers; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import (
        ALL_MASK_ATTENTION_FUNCTIONS,
        AttentionMaskInterface,
        eager_mask,
    )

    if CAPTURE_IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(CAPTURE_IMPLEMENTATION, capture_attention)
    if CAPTURE_IMPLEMENTATION not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionMaskInterface.register(CAPTURE_IMPLEMENTATION, eager_mask)
    return CAPTURE_IMPLEMENTATION


# ----------------------------------------------------------------------------- layer discovery

_STACK = re.compile(r"^(?:(.*)\.)?(?:layers|blocks|layer)\.(\d+)\.")


def language_attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Attention modules of the language model, in layer order.

    They are the modules with an integer ``layer_idx`` and a query projection whose ``config`` is
    the model's text config (for encoder-only text models: the model config).
    """
    text_config = model.config.get_text_config()
    found = {}
    for _, module in model.named_modules():
        idx = getattr(module, "layer_idx", None)
        if not isinstance(idx, int) or getattr(module, "config", None) is not text_config:
            continue
        if not any(hasattr(module, p) for p in ("q_proj", "query", "qkv", "qkv_proj")):
            continue
        if idx in found:
            raise ValueError(f"two attention modules claim language layer {idx}")
        found[idx] = module
    if not found or sorted(found) != list(range(len(found))):
        raise ValueError(f"could not find the language-model attention layers of "
                         f"{type(model).__name__} (found layer indices {sorted(found)})")
    return [found[i] for i in range(len(found))]


def encoder_attention_modules(model: torch.nn.Module,
                              language: list[torch.nn.Module]) -> dict[int, tuple[str, int]]:
    """id(module) -> (encoder name, layer) for the other attention modules in layer stacks."""
    skip = {id(m) for m in language}
    out = {}
    for name, module in model.named_modules():
        if id(module) in skip or not type(module).__name__.endswith("Attention"):
            continue
        if any(type(c).__name__.endswith("Attention") for c in module.children()):
            continue
        match = _STACK.match(name + ".")
        if match:
            prefix = (match.group(1) or "encoder").rsplit(".", 1)[-1]
            out[id(module)] = (prefix, int(match.group(2)))
    return out


# ----------------------------------------------------------------------------- recording

class Recorder:
    """Accumulates the reductions of one forward pass (batch size 1)."""

    def __init__(self, plan: CapturePlan, language: list[torch.nn.Module],
                 encoders: dict[int, tuple[str, int]]):
        self.plan = plan
        self.layer_of = {id(m): i for i, m in enumerate(language)}
        self.encoder_of = encoders
        self.num_layers = len(language)
        tm = torch.as_tensor(np.asarray(plan.token_modality), dtype=torch.long)
        self.token_modality = tm
        self.onehot = torch.nn.functional.one_hot(tm, plan.num_modalities)  # (S, M)
        qi = torch.as_tensor(np.asarray(plan.query_index), dtype=torch.long)
        self.query_index = qi
        self.query_modality = tm[qi]
        # position -> row in the query set, or -1
        self.row_of = torch.full((tm.numel(),), -1, dtype=torch.long)
        self.row_of[qi] = torch.arange(qi.numel())
        self._layers: dict[int, dict[str, torch.Tensor]] = {}
        self._encoders: dict[tuple[str, int], list] = {}
        self.device = torch.device("cpu")

    def _follow(self, device: torch.device) -> None:
        """Keep the index tensors on the device the attention runs on."""
        if device != self.device:
            for name in ("token_modality", "onehot", "query_index", "query_modality", "row_of"):
                setattr(self, name, getattr(self, name).to(device))
            self.device = device

    def role(self, module):
        if id(module) in self.layer_of:
            return "language", self.layer_of[id(module)]
        if id(module) in self.encoder_of:
            return "encoder", self.encoder_of[id(module)]
        return None

    def _slots(self, layer: int, heads: int) -> dict[str, torch.Tensor]:
        slots = self._layers.get(layer)
        if slots is None:
            Q, M = self.query_index.numel(), self.plan.num_modalities
            S = self.token_modality.numel()
            f64 = dict(dtype=torch.float64, device=self.device)
            slots = {
                "block": torch.zeros(heads, M, M, **f64),
                "rows": torch.zeros(heads, Q, M, **f64),
                "visible": torch.zeros(M, M, **f64),
                "row_visible": torch.zeros(Q, M, **f64),
                "entropy": torch.zeros(heads, M, **f64),
            }
            if layer in self.plan.full_map_layers:
                slots["full"] = torch.zeros(heads, Q, S, dtype=torch.float32, device=self.device)
            self._layers[layer] = slots
        return slots

    def observe_language(self, layer: int, weights: torch.Tensor, mask: torch.Tensor | None,
                         row_start: int) -> None:
        """Reduce one block of rows: ``weights`` (1, H, C, S) for positions
        row_start..row_start+C."""
        B, H, C, K = weights.shape
        S = self.token_modality.numel()
        if B != 1:
            raise ValueError(f"attention capture supports batch size 1, got {B}")
        if K != S:
            raise ValueError(f"layer {layer}: attention over {K} keys but the capture plan has "
                             f"{S} positions (capture needs one full forward pass without cache)")
        self._follow(weights.device)
        rows = self.row_of[row_start:row_start + C]
        local = torch.nonzero(rows >= 0).flatten()
        if local.numel() == 0:
            return
        q = rows[local]                        # rows in the query set
        qmod = self.query_modality[q]          # (n,)
        if local.numel() == C:                 # every row of the block: no gather copy
            w = weights[0]
            block_mask = mask[0, 0] if mask is not None else None
        else:
            w = weights[0][:, local]           # (H, n, S)
            block_mask = mask[0, 0][local] if mask is not None else None
        w = w.float()                          # reductions in float32, sums in float64
        onehot = self.onehot.to(w)
        mass = (w @ onehot).double()           # (H, n, M)
        slots = self._slots(layer, H)
        slots["rows"][:, q] = mass
        slots["block"].index_add_(1, qmod, mass)
        ent = -torch.special.xlogy(w, w).sum(-1).double()   # (H, n)
        slots["entropy"].index_add_(1, qmod, ent)
        if block_mask is None:
            vis = onehot.sum(0).double().expand(local.numel(), -1)
        else:
            if block_mask.dtype == torch.bool:
                visible = block_mask.to(w.dtype)
            else:
                visible = (block_mask > torch.finfo(block_mask.dtype).min / 2).to(w.dtype)
            vis = (visible @ onehot).double()  # (n, M)
        slots["row_visible"][q] = vis
        slots["visible"].index_add_(0, qmod, vis)
        if "full" in slots:
            slots["full"][:, q] = w

    def observe_encoder(self, key: tuple[str, int], weights: torch.Tensor,
                        mask: torch.Tensor | None = None) -> None:
        """Accumulate an encoder attention block ``weights`` (B, H, C, K); ``mask`` (B, 1, C, K),
        additive or boolean, marks the keys each row may see (None: every key)."""
        B, H, C, K = weights.shape
        w = weights.float().permute(1, 0, 2, 3).reshape(H, B * C, K)
        if mask is None:
            visible = torch.ones(B * C, K, dtype=torch.bool, device=w.device)
        else:
            m = mask[:, 0, :, :K].expand(B, C, K)
            visible = m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min / 2
            visible = visible.reshape(B * C, K)
        self.observe_encoder_rows(key, w, visible)

    def observe_encoder_rows(self, key: tuple[str, int], weights: torch.Tensor,
                             visible: torch.Tensor) -> None:
        """Accumulate attention rows ``weights`` (H, R, K) of an encoder layer; ``visible`` (R, K)
        bool marks the keys each row may see. Rows that see no key (padding) are left out."""
        keep = visible.any(-1)
        w, vis = weights[:, keep], visible[keep]
        acc = self._encoders.setdefault(key, {
            "entropy": torch.zeros(w.shape[0], dtype=torch.float64),
            "mass": torch.zeros(w.shape[0], dtype=torch.float64), "visible": 0.0, "rows": 0})
        acc["entropy"] += -torch.special.xlogy(w, w).sum(-1).double().sum(-1).cpu()
        acc["mass"] += (w * vis).sum(-1).double().sum(-1).cpu()
        acc["visible"] += float(vis.sum())
        acc["rows"] += int(vis.shape[0])

    def result(self) -> CaptureResult:
        missing = [i for i in range(self.num_layers) if i not in self._layers]
        if missing:
            raise RuntimeError(
                f"language layers {missing} were not captured: run the model with "
                f"attn_implementation={CAPTURE_IMPLEMENTATION!r} inside `capturing`")
        counts = torch.bincount(self.query_modality.cpu(),
                                minlength=self.plan.num_modalities).double()
        denom = torch.where(counts > 0, counts, torch.ones_like(counts))

        def stack(name, scale_axis=None):
            arrs = [self._layers[i][name].cpu() for i in range(self.num_layers)]
            out = torch.stack(arrs)
            if scale_axis is not None:
                shape = [1] * out.ndim
                shape[scale_axis] = -1
                out = out / denom.view(shape)
            return out.float().numpy()

        encoder_entropy, encoder_block, encoder_visible = {}, {}, {}
        for name in sorted({k[0] for k in self._encoders}):
            accs = [self._encoders[k] for k in sorted(k for k in self._encoders if k[0] == name)]
            rows = [max(a["rows"], 1) for a in accs]
            encoder_entropy[name] = torch.stack(
                [a["entropy"] / r for a, r in zip(accs, rows, strict=True)]).float().numpy()
            encoder_block[name] = torch.stack(
                [a["mass"] / r for a, r in zip(accs, rows, strict=True)]
            ).float().numpy()[:, :, None, None]
            encoder_visible[name] = np.array(
                [a["visible"] / r for a, r in zip(accs, rows, strict=True)],
                dtype=np.float32)[:, None, None]
        return CaptureResult(
            block_mass=stack("block", scale_axis=2),
            row_mass=stack("rows"),
            visible_count=stack("visible", scale_axis=1),
            row_visible=stack("row_visible"),
            entropy=stack("entropy", scale_axis=2),
            full_maps={i: self._layers[i]["full"].cpu().numpy()
                       for i in sorted(self.plan.full_map_layers)
                       if "full" in self._layers.get(i, {})},
            encoder_entropy=encoder_entropy,
            encoder_block_mass=encoder_block,
            encoder_visible_count=encoder_visible,
        )


_ACTIVE: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("xmodal_recorder",
                                                                          default=None)


@contextlib.contextmanager
def capturing(model: torch.nn.Module, plan: CapturePlan):
    """Context in which calls to `capture_attention` by ``model``'s layers are recorded.

    Yields the `Recorder`; call ``recorder.result()`` after the forward pass.
    """
    register_capture()
    language = language_attention_modules(model)
    bad = {layer for layer in plan.full_map_layers if not 0 <= layer < len(language)}
    if bad:
        raise ValueError(f"full-map layers {sorted(bad)} out of range [0, {len(language)})")
    recorder = Recorder(plan, language, encoder_attention_modules(model, language))
    hooks = hook_encoders(model, recorder)
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)
        for handle in hooks:
            handle.remove()


# ----------------------------------------------------------------------------- module hooks

_CONFORMER = re.compile(r"^(?:(.*)\.)?conformer\.(\d+)\.")


def hook_encoders(model: torch.nn.Module, recorder: Recorder) -> list:
    """Forward hooks on encoder attention that bypasses `AttentionInterface` (Gemma 3n's audio
    conformer); they read the module's inputs and logits and change nothing. Returns the handles."""
    handles = []
    for name, module in model.named_modules():
        if type(module).__name__ != "Gemma3nAudioAttention":
            continue
        match = _CONFORMER.match(name + ".")
        if not match:
            continue
        key = ((match.group(1) or "audio_tower").rsplit(".", 1)[-1], int(match.group(2)))
        state = {}

        def keep_mask(mod, args, kwargs, state=state):
            state["mask"] = kwargs["mask"] if "mask" in kwargs else args[1]

        def observe(rpe, args, logits, module=module, key=key, state=state):
            with torch.no_grad():
                weights, visible = gemma3n_audio_rows(module, logits.detach(), state.pop("mask"))
                recorder.observe_encoder_rows(key, weights, visible)

        handles.append(module.register_forward_pre_hook(keep_mask, with_kwargs=True))
        handles.append(module.relative_position_embedding.register_forward_hook(observe))
    return handles


def gemma3n_audio_rows(module, logits: torch.Tensor, mask: torch.Tensor):
    """Attention rows of Gemma 3n's chunked local audio attention, as the module computes them.

    logits: (B, H, U, W, C) relative-position logits of U blocks of W query frames over C context
    frames; mask: (B, T) True at padded frames. Returns weights (H, R, C) of the R valid query
    frames and visible (R, C): keys that are real frames inside the query's local window.
    """
    valid = ~mask
    keys = module._extract_block_context(valid)                       # (B, U, C)
    window = module.local_causal_valid_mask.to(keys.device)          # (W, C)
    visible = keys[:, :, None, :] & window[None, None]                # (B, U, W, C)
    cap = module.softcap.to(logits.device)
    logits = torch.tanh(logits / cap) * cap
    logits = torch.where(visible[:, None], logits, torch.finfo(logits.dtype).min)
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32)     # (B, H, U, W, C)
    B, H, U, W, C = weights.shape
    queries = module._convert_to_block(valid).reshape(-1)             # (B * U * W,)
    weights = weights.permute(1, 0, 2, 3, 4).reshape(H, B * U * W, C)[:, queries]
    return weights, visible.reshape(B * U * W, C)[queries]


# ----------------------------------------------------------------------------- attention

def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


def capture_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                      softcap=None, **kwargs):
    """Eager attention for transformers' `AttentionInterface`, reduced while `capturing`, with
    the modality-block changes of `mllm_probe.intervention` while `intervening`.

    query (B, H, Sq, D), key/value (B, Hkv, Sk, D), attention_mask additive (B, 1, Sq, Sk) or
    None. Returns (output (B, Sq, H, D), None): weights are never returned whole.
    """
    if scaling is None:
        scaling = module.head_dim ** -0.5
    groups = getattr(module, "num_key_value_groups", 1)
    key = _repeat_kv(key, groups)
    value = _repeat_kv(value, groups)
    B, H, Sq, _ = query.shape
    Sk = key.shape[2]
    recorder = _ACTIVE.get()
    role = recorder.role(module) if recorder is not None else None
    budget = recorder.plan.chunk_elements if recorder is not None else DEFAULT_CHUNK_ELEMENTS
    rows = max(1, budget // max(1, B * H * Sk))
    mask = attention_mask[:, :, :, :Sk] if attention_mask is not None else None
    training = getattr(module, "training", False)
    state = intervention.active()
    edits = state.blocks(module, B, Sq, Sk, query.device) if state is not None else []
    outputs = []
    for start in range(0, Sq, rows):
        stop = min(Sq, start + rows)
        w = torch.matmul(query[:, :, start:stop], key.transpose(2, 3)) * scaling
        if softcap is not None:
            w = torch.tanh(w / softcap) * softcap
        if edits:
            w = intervention.apply_to_logits(edits, w, start)
        block_mask = mask[:, :, start:stop] if mask is not None else None
        if block_mask is not None:
            if block_mask.dtype == torch.bool:
                w = w.masked_fill(~block_mask, torch.finfo(w.dtype).min)
            else:
                w = w + block_mask
        dead = None
        if edits:
            w, dead = intervention.apply_knockout(edits, w, start, block_mask)
        w = torch.nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(query.dtype)
        if dead is not None:
            w.masked_fill_(dead, 0.0)
        if role is not None:
            part, where = role
            with torch.no_grad():
                if part == "language":
                    recorder.observe_language(where, w.detach(), block_mask, start)
                else:
                    recorder.observe_encoder(where, w.detach(), block_mask)
        w = torch.nn.functional.dropout(w, p=dropout, training=training)
        outputs.append(torch.matmul(w, value))
        del w
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return out.transpose(1, 2).contiguous(), None


__all__ = ["CAPTURE_IMPLEMENTATION", "CapturePlan", "CaptureResult", "Recorder",
           "capture_attention", "capturing", "encoder_attention_modules", "gemma3n_audio_rows",
           "hook_encoders",
           "language_attention_modules", "register_capture"]
