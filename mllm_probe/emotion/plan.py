"""A plan before a long run: from the clips, the config and the processor (no weights), the clips
usable and skipped, the tokens per modality, the forward passes and an estimate of peak memory.

The model is built on the meta device (`load_adapter(weights=False)`): parameter shapes without
memory. Peak memory per clip x condition, in bytes, for weights of ``dtype``:

    weights      parameters x bytes per parameter
    kv_cache     (1 + 2 B) x (P + T) x layers x 2 x kv_heads x head_dim x bytes
                 (the prefix cache, B batch copies of it and the extended copies of one batch)
    logits       (P + B x T) x vocab x bytes + B x T x vocab x 4 (float32 log-softmax)
    activations  P x (4 x hidden + 2 x intermediate) x bytes (one layer of the prefix pass)

with P the media-prefix positions, T the longest suffix row, B = min(batch size, rows). It is an
estimate of what the run holds at once, without allocator overhead or the media encoders'
activations; every layer is taken to cache every position (Gemma 3n caches fewer).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from mllm_probe.emotion import scoring
from mllm_probe.emotion import tokens as _tokens
from mllm_probe.emotion.conditions import apply_condition
from mllm_probe.emotion.preprocess import Preprocessing, load_clip_media
from mllm_probe.emotion.prompts import variants
from mllm_probe.modality import MODALITIES, token_modality

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = float(1 << 30)


def _text_dims(adapter) -> dict:
    cfg = adapter.text_config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    intermediate = getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
    if isinstance(intermediate, (list, tuple)):  # per layer (Gemma 3n): the widest
        intermediate = max(intermediate)
    return {"layers": cfg.num_hidden_layers, "kv_heads": getattr(cfg, "num_key_value_heads", heads),
            "head_dim": head_dim, "hidden": cfg.hidden_size, "intermediate": int(intermediate),
            "vocab": cfg.vocab_size}


def _config_dtype(config) -> str:
    """The checkpoint's dtype (``--dtype auto``) from its config; float32 if it names none."""
    for cfg in (config, config.get_text_config()):
        value = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)
        if value is not None:
            name = str(value).replace("torch.", "")
            if name in BYTES:
                return name
    return "float32"


def peak_memory(dims: dict, parameters: int, prefix: int, suffix: int, batch: int,
                dtype_bytes: int) -> dict[str, float]:
    """Bytes of each term of the module docstring's estimate, and their ``total``."""
    kv = (1 + 2 * batch) * (prefix + suffix) * dims["layers"] * 2 * dims["kv_heads"] * \
        dims["head_dim"] * dtype_bytes
    logits = (prefix + batch * suffix) * dims["vocab"] * dtype_bytes + \
        batch * suffix * dims["vocab"] * 4
    act = prefix * (4 * dims["hidden"] + 2 * dims["intermediate"]) * dtype_bytes
    out = {"weights": float(parameters * dtype_bytes), "kv_cache": float(kv),
           "logits": float(logits), "activations": float(act)}
    out["total"] = sum(out.values())
    return out


def make_plan(adapter, dataset, preprocessing: Preprocessing, conditions, *, dtype: str,
              batch_size: int = 64, generate: bool = True, max_new_tokens: int = 16,
              processor_kwargs=None, limit: int | None = None, log=None) -> dict:
    """The plan of a run (see the module docstring) as a JSON-able dict; progress on ``log``."""
    log = log or sys.stderr
    preprocessing.check()
    start = time.perf_counter()
    dtype_name = dtype if dtype in BYTES else _config_dtype(adapter.model.config)
    nbytes = BYTES.get(dtype_name, 4)
    parameters = int(sum(p.numel() for p in adapter.model.parameters()))
    dims = _text_dims(adapter)
    vs = list(variants())
    rows_per_batch = min(batch_size, sum(len(v.allowed) for v in vs))
    clips = list(dataset.clips[:limit] if limit else dataset.clips)
    skipped = [{"clip": s.id, "reason": s.reason} for s in dataset.skipped]
    usable, passes = [], None
    for k, clip in enumerate(clips, start=1):
        try:
            media = load_clip_media(clip, preprocessing, adapter.sampling_rate)
            per_condition = {}
            for cond in conditions:
                m = apply_condition(media, cond)
                prefix = scoring.build_prefix(adapter, audio=m.audio, video=m.frames,
                                              processor_kwargs=processor_kwargs,
                                              **m.input_options())
                per_condition[cond] = _tokens.count(token_modality(prefix.input_ids,
                                                                   adapter.spec))
        except ImportError:
            raise
        except Exception as err:  # noqa: BLE001  what the run would skip, with its reason
            skipped.append({"clip": clip.id, "reason": f"{type(err).__name__}: {err}"})
            print(f"[{k}/{len(clips)}] {clip.id}: skipped ({err})", file=log, flush=True)
            continue
        if passes is None:
            passes = scoring.forward_passes(adapter.tokenizer, prefix, vs, batch_size=batch_size,
                                            generate=generate, max_new_tokens=max_new_tokens)
        first = per_condition[conditions[0]]
        P = max(sum(c.values()) for c in per_condition.values())
        memory = peak_memory(dims, parameters, P, passes["suffix_tokens"], rows_per_batch,
                             nbytes)
        usable.append({"clip": clip.id, "frames": int(media.frames.shape[0]),
                       "audio_seconds": float(len(media.audio) / media.sampling_rate),
                       "tokens": first, "prefix_tokens": P,
                       "same_in_all_conditions": all(c == first for c in per_condition.values()),
                       "tokens_per_condition": per_condition, "peak_memory_bytes": memory})
        print(f"[{k}/{len(clips)}] {clip.id}: {P} prefix tokens", file=log, flush=True)
    units = len(usable) * len(conditions)
    per_unit = None if passes is None else passes["prefix"] + passes["scores"] + passes["generate"]
    return {"model": adapter.describe(), "parameters": parameters, "dtype": dtype_name,
            "preprocessing": preprocessing.describe(), "conditions": list(conditions),
            "clips": {"usable": len(usable), "skipped": len(skipped)}, "skipped": skipped,
            "per_clip": usable, "forward_passes_per_unit": passes, "units": units,
            "forward_passes_total_max": None if per_unit is None else units * per_unit,
            "batch_size": batch_size, "seconds": time.perf_counter() - start}


def gib(nbytes: float) -> str:
    """Bytes in GiB, 3 significant digits."""
    return f"{nbytes / GIB:.3g}"


def render_plan(plan: dict) -> str:
    """The plan as text: header, skipped clips, a table per clip, passes and memory."""
    p, pre = plan, plan["preprocessing"]
    settings = ", ".join(f"{k} {v}" for k, v in pre.items() if k != "pipeline" and v is not None)
    lines = [(f"plan: model {p['model']['id']} ({p['model']['architecture']}, "
              f"{p['parameters'] / 1e6:.1f} M parameters, {p['dtype']} weights "
              f"{gib(p['parameters'] * BYTES.get(p['dtype'], 4))} GiB)"),
             f"preprocessing: {pre['pipeline']}" + (f" ({settings})" if settings else ""),
             f"clips: {p['clips']['usable']} usable, {p['clips']['skipped']} skipped"]
    lines += [f"  skipped {s['clip']}: {s['reason']}" for s in p["skipped"]]
    fp = p["forward_passes_per_unit"]
    if fp:
        lines.append(f"forward passes per clip x condition: 1 prefix + {fp['scores']} scoring + "
                     f"<= {fp['generate']} generation = <= {1 + fp['scores'] + fp['generate']} "
                     f"(batch size {p['batch_size']}); {p['units']} units: <= "
                     f"{p['forward_passes_total_max']} passes")
    header = ["clip", "frames", "audio_s", *MODALITIES, "prefix", "conditions", "kv_GiB",
              "logits_GiB", "peak_GiB"]
    table = [header]
    for c in p["per_clip"]:
        m = c["peak_memory_bytes"]
        table.append([c["clip"], str(c["frames"]), f"{c['audio_seconds']:.2f}",
                      *(str(c["tokens"][k]) for k in MODALITIES), str(c["prefix_tokens"]),
                      "same" if c["same_in_all_conditions"] else "differ", gib(m["kv_cache"]),
                      gib(m["logits"]), gib(m["total"])])
    if len(table) > 1:
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        lines.append("tokens of the media prefix and peak memory per clip "
                     f"({p['dtype']}; weights included):")
        lines += ["  " + "  ".join(v.rjust(w) if i else v.ljust(w)
                                   for i, (v, w) in enumerate(zip(r, widths, strict=False)))
                  for r in table]
        peaks = np.array([c["peak_memory_bytes"]["total"] for c in p["per_clip"]])
        lines.append(f"largest peak {gib(peaks.max())} GiB; planned in {p['seconds']:.1f} s")
    return "\n".join(lines) + "\n"


__all__ = ["BYTES", "make_plan", "peak_memory", "render_plan"]
