"""Scoring the prompt variants of one clip x condition with the media prefix encoded once.

The input of every variant is ``prefix + suffix``: the prefix holds the chat-template head and the
media placeholders (identical for all variants), the suffix the variant's text, the template tail
and the answer. `encode_prefix` runs the prefix once (``use_cache=True``, media encoders
included); `label_scores` and `generate` append the text all variants share once
(`extend_prefix`) and then run batches of suffix rows on copies of that cache, so the media are
encoded once per clip x condition instead of once per variant.

Primary score: the log-probability (nats) of each allowed label's full answer
``[{"emotion": "<label>"}]`` as the continuation of the prompt, summed over the answer tokens from
the first token where the six labels' answers differ (their shared start is context). No real
token attends to padding or sits at a padded position, so the scores equal a full recomputation
(`label_scores_recomputed`) to float rounding.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect

import numpy as np
import torch

from mllm_probe.adapters import Adapter
from mllm_probe.emotion.prompts import LABELS, Variant, answer_text, prompt_text

#: Marker rendered where the variant text goes, to split the template into head and tail.
SPLIT_MARKER = "XMODALSPLITMARKER"


@dataclasses.dataclass(frozen=True, eq=False)
class PrefixInputs:
    """Model inputs of the shared prefix (batch 1, P positions) and the token ids of the tail."""

    model_inputs: dict        # tensors for the model, input_ids (1, P)
    input_ids: np.ndarray     # (P,) int64
    tail_ids: np.ndarray      # (R,) ids of the template after the user text (e.g. end of turn)


@dataclasses.dataclass(eq=False)
class EncodedPrefix:
    """The prefix after one forward pass: its cache and the position offset of what follows."""

    cache: object             # transformers Cache, batch 1, P positions
    length: int               # P
    rope_delta: int           # position of sequence index i >= P is i + rope_delta


def build_prefix(adapter: Adapter, *, audio=None, video=None, processor_kwargs=None,
                 **options) -> PrefixInputs:
    """Render the conversation with the media and a marker text and split it at the marker.

    ``options``: more keywords of ``adapter.build_inputs`` (e.g. `Media.input_options`)."""
    prompt = adapter.build_inputs(SPLIT_MARKER, audio=audio, video=video,
                                  processor_kwargs=processor_kwargs, **options)
    marker = np.asarray(adapter.tokenizer(SPLIT_MARKER, add_special_tokens=False)["input_ids"])
    ids = prompt.input_ids
    hits = [i for i in range(len(ids) - len(marker), -1, -1)
            if np.array_equal(ids[i:i + len(marker)], marker)]
    if not hits:
        raise ValueError(f"{adapter.model_id}: cannot find the prompt text in the rendered "
                         f"conversation (tokenizer merges it with the template)")
    start = hits[0]
    S = len(ids)
    inputs = {}
    for key, value in prompt.model_inputs.items():
        if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape == (1, S):
            value = value[:, :start]
        inputs[key] = value
    return PrefixInputs(inputs, ids[:start].copy(), ids[start + len(marker):].copy())


def _output_cache(out):
    """The key/value cache of a model output (``cache`` in transformers >= 5.2x, else
    ``past_key_values``), or None."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _rope_delta(adapter: Adapter, prefix: PrefixInputs) -> int:
    """Qwen2.5-Omni's multimodal rope: text after the media continues at max position + 1."""
    model = adapter.model
    if not hasattr(model, "get_rope_index"):
        return 0
    mi = prefix.model_inputs
    fam = mi.get("feature_attention_mask")
    positions, _ = model.get_rope_index(
        mi["input_ids"], mi.get("image_grid_thw"), mi.get("video_grid_thw"),
        torch.ones_like(mi["input_ids"]), bool(mi.get("use_audio_in_video", False)),
        fam.sum(-1) if fam is not None else None, mi.get("video_second_per_grid"))
    return int(positions.max()) + 1 - int(mi["input_ids"].shape[1])


def encode_prefix(adapter: Adapter, prefix: PrefixInputs) -> EncodedPrefix:
    """One forward pass over the prefix (media encoders included), keeping the cache."""
    model = adapter.model
    with torch.no_grad():
        out = model(**prefix.model_inputs, use_cache=True)
    cache = _output_cache(out)
    if cache is None:
        raise ValueError(f"{adapter.model_id}: the model returned no key/value cache")
    return EncodedPrefix(cache, len(prefix.input_ids), _rope_delta(adapter, prefix))


def _positions(adapter: Adapter, encoded: EncodedPrefix, steps: torch.Tensor) -> torch.Tensor:
    """Position ids of suffix tokens at sequence offsets ``steps`` (B, T) after the prefix."""
    pos = steps + encoded.length + encoded.rope_delta
    if hasattr(adapter.model, "get_rope_index"):   # multimodal rope: (3, B, T)
        return pos.unsqueeze(0).expand(3, -1, -1)
    return pos


def _shared_start(rows: list) -> int:
    """Length of the common token prefix of ``rows``, leaving at least one token in each."""
    n, shortest = 0, min(len(r) for r in rows)
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def extend_prefix(adapter: Adapter, encoded: EncodedPrefix, ids) -> EncodedPrefix:
    """The prefix followed by ``ids`` (text shared by every row), run once on a copy of the
    cache."""
    ids = [int(i) for i in ids]
    if not ids:
        return encoded
    device = adapter.model.device
    T = len(ids)
    out = _run_suffix(adapter, encoded, torch.as_tensor([ids], device=device),
                      torch.ones(1, encoded.length + T, dtype=torch.long, device=device),
                      _positions(adapter, encoded, torch.arange(T)[None]).to(device),
                      _batch_cache(encoded, 1))
    cache = _output_cache(out)
    return EncodedPrefix(cache, encoded.length + T, encoded.rope_delta)


def _batch_cache(encoded: EncodedPrefix, batch: int):
    cache = copy.deepcopy(encoded.cache)
    cache.batch_repeat_interleave(batch)
    return cache


def _run_suffix(adapter, encoded, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                cache):
    """Forward ``ids`` (B, T) after the cached prefix; ``mask`` (B, P + T) marks real keys."""
    model = adapter.model
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions,
                     use_cache=True, **{_cache_kwarg(model): cache})


@dataclasses.dataclass(frozen=True)
class ScoreRows:
    """Token rows of the label scoring: one row per (variant, allowed label)."""

    variant: np.ndarray       # (N,) index into the variants given
    label: np.ndarray         # (N,) index into LABELS
    tokens: list              # N arrays of suffix + answer ids
    scored: np.ndarray        # (N,) number of trailing tokens whose log-probs are summed


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_split(tokenizer) -> tuple[list[int], list[list[int]]]:
    """Shared start of the six answers' token ids and each label's remaining ids.

    Raises ValueError if two labels tokenize to the same answer (a tokenizer that cannot tell
    them apart, e.g. a word-level vocabulary without the labels).
    """
    answers = [_encode(tokenizer, answer_text(label)) for label in LABELS]
    common = 0
    while all(len(a) > common and a[common] == answers[0][common] for a in answers):
        common += 1
    rests = [a[common:] for a in answers]
    for i in range(len(LABELS)):
        for j in range(i):
            if rests[i] == rests[j]:
                raise ValueError(f"the tokenizer gives the same answer tokens for {LABELS[j]!r} "
                                 f"and {LABELS[i]!r} ({answers[i]}); labels cannot be scored")
    return answers[0][:common], rests


def score_rows(tokenizer, prefix: PrefixInputs, variants: list[Variant]) -> ScoreRows:
    """Rows ``prompt_text(v) + tail + answer(label)`` for every allowed label of every variant."""
    common, rests = answer_split(tokenizer)
    tail = [int(t) for t in prefix.tail_ids]
    vi, li, toks, scored = [], [], [], []
    for k, v in enumerate(variants):
        base = _encode(tokenizer, prompt_text(v)) + tail + common
        for label in v.allowed:
            j = LABELS.index(label)
            vi.append(k)
            li.append(j)
            toks.append(np.asarray(base + rests[j], dtype=np.int64))
            scored.append(len(rests[j]))
    return ScoreRows(np.asarray(vi), np.asarray(li), toks, np.asarray(scored))


def _right_padded(rows: list, pad: int):
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad, dtype=np.int64)
    valid = np.zeros((len(rows), T), dtype=bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        valid[i, :len(r)] = True
    return ids, valid


def _pad_id(adapter) -> int:
    tok = adapter.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id or 0)


def _token_logprobs(logp: torch.Tensor, targets) -> float:
    """Sum of ``logp[t, targets[t]]`` (logp (T, vocab) log-softmax rows)."""
    index = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=logp.device)[:, None]
    return float(logp[:len(targets)].gather(-1, index).sum().double())


def label_scores(adapter: Adapter, prefix: PrefixInputs, variants: list[Variant], *,
                 encoded: EncodedPrefix | None = None, batch_size: int = 64) -> np.ndarray:
    """(V, 6) log-probability (nats) of each label's answer per variant; NaN where forbidden.

    The text all variants share is appended to the cached prefix once. Then two passes on that
    cache, both without padding inside a real row's context:
    (1) the variants' contexts (text, template tail, shared answer start), grouped by token
    length so a group needs no padding; the last logits score each label's first answer token;
    (2) the labels' remaining answer tokens, right-padded, on copies of the group's cache
    gathered per row. Batches hold at most ``batch_size`` rows.
    """
    encoded = encoded or encode_prefix(adapter, prefix)
    tok = adapter.tokenizer
    device = adapter.model.device
    common, rests = answer_split(tok)
    tail = [int(t) for t in prefix.tail_ids]
    contexts = [_encode(tok, prompt_text(v)) + tail + common for v in variants]
    shared = _shared_start(contexts)   # the instruction all variants share: encoded once
    encoded = extend_prefix(adapter, encoded, contexts[0][:shared])
    contexts = [c[shared:] for c in contexts]
    scores = np.full((len(variants), len(LABELS)), np.nan)
    groups: dict[int, list[int]] = {}
    for k, ctx in enumerate(contexts):
        groups.setdefault(len(ctx), []).append(k)
    for T, members in sorted(groups.items()):
        for lo in range(0, len(members), batch_size):
            ks = members[lo:lo + batch_size]
            G = len(ks)
            ids = torch.as_tensor(np.array([contexts[k] for k in ks], dtype=np.int64))
            mask = torch.ones(G, encoded.length + T, dtype=torch.long)
            steps = torch.arange(T).expand(G, T)
            out = _run_suffix(adapter, encoded, ids.to(device), mask.to(device),
                              _positions(adapter, encoded, steps).to(device),
                              _batch_cache(encoded, G))
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)       # (G, vocab)
            cache = _output_cache(out)
            rows = [(g, LABELS.index(label)) for g, k in enumerate(ks)
                    for label in variants[k].allowed]
            for g, j in rows:
                scores[ks[g], j] = float(first[g, rests[j][0]].double())
            longer = [(g, j) for g, j in rows if len(rests[j]) > 1]
            for lo2 in range(0, len(longer), batch_size):
                chunk = longer[lo2:lo2 + batch_size]
                ids2, valid2 = _right_padded([rests[j][:-1] for _, j in chunk], _pad_id(adapter))
                B2, T2 = ids2.shape
                sub = copy.deepcopy(cache)
                sub.batch_select_indices(torch.as_tensor([g for g, _ in chunk], device=device))
                mask2 = torch.cat([torch.ones(B2, encoded.length + T, dtype=torch.long),
                                   torch.as_tensor(valid2, dtype=torch.long)], dim=1)
                steps2 = (T + torch.arange(T2)).expand(B2, T2)
                out2 = _run_suffix(adapter, encoded, torch.as_tensor(ids2, device=device),
                                   mask2.to(device),
                                   _positions(adapter, encoded, steps2).to(device), sub)
                logp = torch.log_softmax(out2.logits.float(), dim=-1)
                for b, (g, j) in enumerate(chunk):
                    scores[ks[g], j] += _token_logprobs(logp[b], rests[j][1:])
    return scores


def forward_passes(tokenizer, prefix: PrefixInputs, variants: list[Variant], *,
                   batch_size: int = 64, generate: bool = True,
                   max_new_tokens: int = 16) -> dict[str, int]:
    """Forward passes of one clip x condition, counted from the tokens alone (no model):
    {"prefix": 1, "scores": `label_scores` passes, "generate": at most that many `generate`
    passes (fewer when every answer stops early), "suffix_tokens": longest suffix row}.

    Mirrors the batching of `label_scores` and `generate` (shared text once, then length groups
    and chunks of ``batch_size`` rows)."""
    common, rests = answer_split(tokenizer)
    tail = [int(t) for t in prefix.tail_ids]
    contexts = [_encode(tokenizer, prompt_text(v)) + tail + common for v in variants]
    shared = _shared_start(contexts)
    passes = int(shared > 0)
    groups: dict[int, list[int]] = {}
    for k, ctx in enumerate(contexts):
        groups.setdefault(len(ctx) - shared, []).append(k)
    longest = 0
    for T, members in groups.items():
        for lo in range(0, len(members), batch_size):
            ks = members[lo:lo + batch_size]
            longer = sum(len(rests[LABELS.index(label)]) > 1 for k in ks
                         for label in variants[k].allowed)
            passes += 1 + -(-longer // batch_size)
            longest = max(longest, T + max(len(r) for r in rests) - 1)
    out = {"prefix": 1, "scores": passes, "generate": 0, "suffix_tokens": longest}
    if generate:
        prompts = [_encode(tokenizer, prompt_text(v)) + tail for v in variants]
        shared = _shared_start(prompts)
        chunks = -(-len(variants) // batch_size)
        out["generate"] = int(shared > 0) + chunks * max_new_tokens
        out["suffix_tokens"] = max(longest, max(len(p) for p in prompts) - shared + max_new_tokens)
    return out


def prompt_lengths(tokenizer, prefix: PrefixInputs, variants: list[Variant]) -> list[int]:
    """Positions of each variant's whole prompt: prefix, variant text and template tail."""
    base = len(prefix.input_ids) + len(prefix.tail_ids)
    return [base + len(_encode(tokenizer, prompt_text(v))) for v in variants]


def label_scores_recomputed(adapter: Adapter, prefix: PrefixInputs,
                            variants: list[Variant]) -> np.ndarray:
    """Reference for `label_scores`: every (variant, label) row as its own full forward pass
    (media encoders included, no cache). Slow; for tests and the benchmark baseline."""
    rows = score_rows(adapter.tokenizer, prefix, variants)
    scores = np.full((len(variants), len(LABELS)), np.nan)
    device = adapter.model.device
    for k, r in enumerate(rows.tokens):
        inputs = dict(prefix.model_inputs)
        ids = torch.cat([inputs["input_ids"], torch.as_tensor(r, device=device)[None]], dim=1)
        inputs["input_ids"] = ids
        inputs["attention_mask"] = torch.ones_like(ids)
        for key in ("token_type_ids", "mm_token_type_ids"):
            if key in inputs:
                inputs[key] = torch.cat([inputs[key], torch.zeros_like(ids[:, :len(r)])], dim=1)
        with torch.no_grad():
            logits = adapter.model(**inputs, use_cache=False).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        S, n = ids.shape[1], int(rows.scored[k])
        target = ids[0, S - n:]
        scores[rows.variant[k], rows.label[k]] = float(
            logp[S - n - 1:S - 1].gather(-1, target[:, None]).sum().double())
    return scores


def generate(adapter: Adapter, prefix: PrefixInputs, variants: list[Variant], *,
             encoded: EncodedPrefix | None = None, max_new_tokens: int = 16,
             batch_size: int = 64) -> list[str]:
    """Greedy answers (decoded text) of all variants, batched after the shared prefix.

    The shared start of the prompts joins the cached prefix; the rest is left-padded against it
    (padding masked out, positions counted without it), so every row's next token sits at the
    same cache index. Exact for full-attention layers; in sliding-window layers (Gemma 3n) the
    few pad slots count toward the window. The primary scores (`label_scores`) use no padding.
    """
    encoded = encoded or encode_prefix(adapter, prefix)
    tok = adapter.tokenizer
    device = adapter.model.device
    tail = [int(t) for t in prefix.tail_ids]
    stop = {int(t) for t in np.atleast_1d(adapter.model.generation_config.eos_token_id or [])}
    if tok.eos_token_id is not None:
        stop.add(int(tok.eos_token_id))
    texts: list[str] = []
    prompts = [_encode(tok, prompt_text(v)) + tail for v in variants]
    shared = _shared_start(prompts)
    encoded = extend_prefix(adapter, encoded, prompts[0][:shared])
    prompts = [np.asarray(p[shared:], dtype=np.int64) for p in prompts]
    for lo in range(0, len(variants), batch_size):
        chunk = prompts[lo:lo + batch_size]
        B, T = len(chunk), max(len(c) for c in chunk)
        ids = np.full((B, T), _pad_id(adapter), dtype=np.int64)
        valid = np.zeros((B, T), dtype=bool)
        for i, c in enumerate(chunk):
            ids[i, T - len(c):] = c
            valid[i, T - len(c):] = True
        steps = torch.as_tensor(np.maximum(np.cumsum(valid, 1) - 1, 0))
        mask = torch.cat([torch.ones(B, encoded.length, dtype=torch.long),
                          torch.as_tensor(valid, dtype=torch.long)], 1).to(device)
        cache = _batch_cache(encoded, B)
        out = _run_suffix(adapter, encoded, torch.as_tensor(ids, device=device), mask,
                          _positions(adapter, encoded, steps).to(device), cache)
        lengths = torch.as_tensor(valid.sum(1))
        answers = np.zeros((B, 0), dtype=np.int64)
        done = np.zeros(B, dtype=bool)
        for step in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1).cpu().numpy()
            nxt = np.where(done, _pad_id(adapter), nxt)
            answers = np.concatenate([answers, nxt[:, None]], 1)
            done |= np.isin(nxt, list(stop))
            if done.all() or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.long, device=device)], 1)
            pos = _positions(adapter, encoded, (lengths + step)[:, None]).to(device)
            out = _run_suffix(adapter, encoded, torch.as_tensor(nxt[:, None], device=device), mask,
                              pos, _output_cache(out))
        for row in answers:
            cut = next((i for i, t in enumerate(row) if t in stop), len(row))
            texts.append(tok.decode([int(t) for t in row[:cut]], skip_special_tokens=True))
    return texts


__all__ = [
    "SPLIT_MARKER",
    "EncodedPrefix",
    "PrefixInputs",
    "ScoreRows",
    "answer_split",
    "build_prefix",
    "encode_prefix",
    "extend_prefix",
    "forward_passes",
    "generate",
    "label_scores",
    "label_scores_recomputed",
    "prompt_lengths",
    "score_rows",
]
