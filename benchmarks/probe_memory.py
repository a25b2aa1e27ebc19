"""Peak memory and time of the attention capture vs ``output_attentions=True`` (full maps).

A tiny random Qwen2 causal LM (hidden 32, 4 heads) at sequence length 4096 by default, for several
layer counts. The capture reduces every query row to 4 modality masses per layer and head; the
full-maps path returns (heads, S, S) per layer. Peak memory is the growth of the peak resident
set during the forward pass on CPU (glibc's mmap threshold fixed so freed blocks leave the
resident set), or ``torch.cuda.max_memory_allocated`` on CUDA.

    python benchmarks/probe_memory.py [--seq 4096] [--layers 2,4,8] [--device cpu|cuda] [--json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fix_malloc() -> None:
    """Serve blocks >= 64 KiB by mmap so that freeing them shrinks the resident set (glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD (also stops its dynamic adjustment)
    except OSError:
        pass


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def measure(fn, device: str) -> tuple[int, float]:
    """(peak bytes above the level before, seconds) of one call of fn."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before, time.perf_counter() - start
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM)
    before = _status("VmRSS:")
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    return _status("VmHWM:") - before, elapsed


def run(seq: int, layer_counts, device: str, heads: int = 4) -> list[dict]:
    import numpy as np
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from mllm_probe.capture import CapturePlan, capturing, register_capture

    name = register_capture()
    ids = torch.randint(10, 90, (1, seq), generator=torch.Generator().manual_seed(0)).to(device)
    tm = np.zeros(seq, dtype=np.int32)
    tm[seq // 8: seq // 2] = 1        # an "audio" span
    tm[seq // 2: 3 * seq // 4] = 2    # a "vision" span
    plan = CapturePlan(tm, np.arange(seq))
    rows = []
    for layers in layer_counts:
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=2,
            max_position_embeddings=seq)).eval().to(device)

        def capture(model=model):
            model.set_attn_implementation(name)
            with torch.no_grad(), capturing(model, plan) as recorder:
                model(input_ids=ids, use_cache=False)
            recorder.result()

        def full_maps(model=model, layers=layers):
            model.set_attn_implementation("eager")
            with torch.no_grad():
                out = model(input_ids=ids, use_cache=False, output_attentions=True)
            assert len(out.attentions) == layers
            del out

        capture(), full_maps()  # warm up
        cap = min((measure(capture, device) for _ in range(2)), key=lambda m: m[0])
        eag = min((measure(full_maps, device) for _ in range(2)), key=lambda m: m[0])
        rows.append({"layers": layers, "seq": seq, "heads": heads,
                     "capture_peak": cap[0], "full_peak": eag[0],
                     "capture_s": cap[1], "full_s": eag[1]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--layers", default="2,4,8")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    _fix_malloc()
    rows = run(args.seq, [int(x) for x in args.layers.split(",")], args.device, args.heads)
    if args.json:
        print(json.dumps(rows))
        return 0
    mib = 1 << 20
    print(f"attention capture vs output_attentions=True: tiny Qwen2, S={args.seq}, "
          f"H={args.heads}, {args.device}")
    print(f"{'layers':>6} {'capture MiB':>12} {'full MiB':>10} {'peak ratio':>11} "
          f"{'capture s':>10} {'full s':>8} {'time ratio':>11}")
    for r in rows:
        print(f"{r['layers']:>6} {r['capture_peak'] / mib:>12.1f} {r['full_peak'] / mib:>10.1f} "
              f"{r['capture_peak'] / r['full_peak']:>11.3f} {r['capture_s']:>10.3f} "
              f"{r['full_s']:>8.3f} {r['capture_s'] / r['full_s']:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
