"""Prompt variants scored per second with the media prefix encoded once (KV cache reused) vs
without reuse, for the emotion experiment's 57 variants of one clip x condition.

Methods (all score every allowed label of every variant; the processor's feature extraction is
done once, outside the timings):
- ``reuse``:      encode the media prefix once, score the 57 variants' 186 label rows in batches
                  on copies of its cache (what ``xmodal emotion`` does);
- ``no reuse``:   encode the media prefix again for every variant, then score that variant's rows
                  on its cache (the media encoders and the prefix run 57 times);
- ``full rows``:  every (variant, label) row as its own full forward pass, no cache (the
                  reference of the tests); timed over ``--full-variants`` variants.

The default media make the prefix realistically long relative to the prompt: 8 frames of
112 x 112 px (4 x 8 x 8 = 256 video tokens for the tiny Qwen2.5-Omni thinker) and 3 s of audio
(25 audio tokens: the tiny feature extractor reads 1 s windows), 287 prefix tokens in all, against
about 60 prompt tokens per variant (of which the shared instruction, ~35, is encoded once with the
prefix in the reuse method). Tiny random model, float32. The timings count model work only.

The tiny Gemma 3n takes at most about 1 s of audio (8 soft tokens) and gives 4 tokens per frame
(64 px), so ``--arch gemma3n --frames 64`` gives a prefix of a few hundred tokens.

    python benchmarks/emotion_throughput.py [--arch qwen2_5_omni|gemma3n] [--model PATH]
        [--device cpu|cuda] [--frames 8] [--size 112] [--seconds 3] [--repeats 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int):
    """(best seconds over ``repeats`` calls, last result); one warm-up call first."""
    fn()
    _sync(device)
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="qwen2_5_omni", choices=("qwen2_5_omni", "gemma3n"))
    ap.add_argument("--model", help="model folder (default: a tiny random model of --arch)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=112, help="frame side in pixels")
    ap.add_argument("--seconds", type=float, default=3.0, help="audio length")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--full-variants", type=int, default=6,
                    help="variants timed for the full-rows baseline (0 skips it)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from mllm_probe.adapters import load_adapter
    from mllm_probe.emotion import scoring
    from mllm_probe.emotion.prompts import variants
    from mllm_probe.emotion.tiny import save_tiny_emotion_model

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    path = args.model or save_tiny_emotion_model(args.arch, os.path.join(tmp.name, args.arch))
    adapter = load_adapter(path, device_map=None if args.device == "cpu" else args.device)
    if adapter.architecture == "gemma3n" and not args.model:
        # the tiny Gemma 3n has 8 audio soft tokens (about 1 s) and 4 tokens per 64 px frame
        args.seconds = min(args.seconds, 1.0)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(16000 * args.seconds))).astype(np.float32)
    frames = rng.integers(0, 255, (args.frames, args.size, args.size, 3), dtype=np.uint8)
    kwargs = None
    if adapter.architecture == "qwen2_5_omni_thinker":
        px = args.size * args.size
        kwargs = {"videos_kwargs": {"size": {"shortest_edge": 28 * 28, "longest_edge": px}}}
    prefix = scoring.build_prefix(adapter, audio=audio, video=frames, processor_kwargs=kwargs)
    vs = list(variants())
    rows = scoring.score_rows(adapter.tokenizer, prefix, vs)
    lengths = [len(r) for r in rows.tokens]
    media_tokens = int(sum(m in (1, 2) for m in
                           adapter.build_inputs("x", audio=audio, video=frames,
                                                processor_kwargs=kwargs).token_modality))

    def reuse():
        enc = scoring.encode_prefix(adapter, prefix)
        return scoring.label_scores(adapter, prefix, vs, encoded=enc, batch_size=args.batch_size)

    def no_reuse():
        out = np.full((len(vs), 6), np.nan)
        for v in vs:
            enc = scoring.encode_prefix(adapter, prefix)
            out[v.index] = scoring.label_scores(adapter, prefix, [v], encoded=enc,
                                                batch_size=args.batch_size)[0]
        return out

    results = []
    t_reuse, s_reuse = timed(reuse, args.device, args.repeats)
    results.append(("reuse (prefix once, batched)", len(vs), t_reuse))
    t_no, s_no = timed(no_reuse, args.device, max(1, args.repeats - 1))
    results.append(("no reuse (prefix per variant)", len(vs), t_no))
    diff = float(np.nanmax(np.abs(s_reuse - s_no)))
    if args.full_variants:
        sub = vs[:args.full_variants]
        t_full, s_full = timed(lambda: scoring.label_scores_recomputed(adapter, prefix, sub),
                               args.device, 1)
        results.append(("full rows (no cache)", len(sub), t_full))
        diff = max(diff, float(np.nanmax(np.abs(s_full - s_reuse[:len(sub)]))))
    rate_reuse = len(vs) / t_reuse
    table = [{"method": m, "variants": n, "seconds": t, "variants_per_s": n / t,
              "reuse_speedup": rate_reuse / (n / t)} for m, n, t in results]
    info = {"model": adapter.model_id if args.model else f"tiny {args.arch} (random weights)",
            "device": str(adapter.model.device), "threads": torch.get_num_threads(),
            "prefix_tokens": len(prefix.input_ids), "media_tokens": media_tokens,
            "prompt_row_tokens": [min(lengths), max(lengths)], "label_rows": len(rows.tokens),
            "max_abs_score_difference_nats": diff}
    if args.json:
        print(json.dumps({"info": info, "results": table}, indent=2))
        return 0
    print(f"{info['model']} on {info['device']} ({info['threads']} threads): prefix "
          f"{info['prefix_tokens']} tokens ({media_tokens} media), prompt rows "
          f"{min(lengths)}-{max(lengths)} tokens, {len(rows.tokens)} label rows for 57 variants")
    print(f"{'method':32s} {'variants':>8s} {'seconds':>9s} {'variants/s':>11s} {'reuse x':>8s}")
    for r in table:
        print(f"{r['method']:32s} {r['variants']:8d} {r['seconds']:9.3f} "
              f"{r['variants_per_s']:11.2f} {r['reuse_speedup']:8.1f}")
    print(f"max |score difference| between methods: {diff:.2e} nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
