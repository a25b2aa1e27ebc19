"""Time and peak memory of an intervened forward pass against a plain one.

Tiny random Qwen2.5-Omni thinker and Gemma 3n builds (the tests' configs), one forward pass over
S positions (a text / audio / vision / text layout of placeholder ids, no media encoders run),
through the probe's attention function: plain (no intervention), two logit factors
(text<-audio:scale=2, audio<-vision:scale=0.5, every layer) and a knockout (text<-audio, every
layer). Ratios are against the plain pass measured in the same process (machine load cancels);
time is the best of ``--repeat`` rounds (every case once per round) of wall and CPU times;
peak memory as in benchmarks/probe_memory.py.

    python benchmarks/intervention_overhead.py [--seq 512] [--models qwen,gemma] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from probe_memory import _fix_malloc, measure

CASES = {
    "plain": (),
    "two factors": ("text<-audio:scale=2", "audio<-vision:scale=0.5"),
    "knockout": ("text<-audio:knockout",),
}


def build(kind: str, seq: int):
    """(model, input ids (1, S)) of a tiny build with text, audio and vision spans."""
    import torch

    from mllm_probe.tiny import tiny_gemma3n_config, tiny_qwen_omni_thinker_config

    torch.manual_seed(0)
    if kind == "qwen":
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
            tiny_qwen_omni_thinker_config(), attn_implementation="eager")
        text, audio, vision = (20, 90), 1, 2
    else:
        from transformers import Gemma3nForConditionalGeneration

        model = Gemma3nForConditionalGeneration._from_config(
            tiny_gemma3n_config(sliding_window=64), attn_implementation="eager")
        text, audio, vision = (20, 80), 105, 97
    ids = torch.randint(*text, (1, seq), generator=torch.Generator().manual_seed(0))
    ids[0, seq // 8: seq // 2] = audio
    ids[0, seq // 2: 3 * seq // 4] = vision
    return model.eval(), ids


def run(kind: str, seq: int, repeat: int) -> list[dict]:
    import torch

    from mllm_probe.capture import register_capture
    from mllm_probe.intervention import intervening, parse_intervention

    model, ids = build(kind, seq)
    model.set_attn_implementation(register_capture())

    def forward(interventions):
        with torch.no_grad(), intervening(model, interventions):
            model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)

    cases = {name: [parse_intervention(s) for s in specs] for name, specs in CASES.items()}
    best = {name: [float("inf")] * 3 for name in cases}   # peak, wall, cpu
    for name in cases:  # warm up
        forward(cases[name])
    for _ in range(repeat):  # rounds over the cases: load spikes hit every case alike
        for name, interventions in cases.items():
            c0 = time.process_time()
            peak, wall = measure(lambda i=interventions: forward(i), "cpu")
            cpu = time.process_time() - c0
            best[name] = [min(x, y) for x, y in zip(best[name], (peak, wall, cpu), strict=True)]
    return [{"model": kind, "seq": seq, "case": name, "peak": p, "wall_s": w, "cpu_s": c}
            for name, (p, w, c) in best.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--models", default="qwen,gemma")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    _fix_malloc()
    import torch

    torch.set_num_threads(1)
    mib = 1 << 20
    print(f"intervened vs plain forward pass, S={args.seq}, CPU, 1 torch thread, best of "
          f"{args.repeat}")
    print(f"{'model':>6} {'case':>12} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9} "
          f"{'time x':>7} {'cpu x':>6} {'memory x':>9}")
    for kind in args.models.split(","):
        rows = run(kind, args.seq, args.repeat)
        base = rows[0]
        for r in rows:
            print(f"{r['model']:>6} {r['case']:>12} {r['wall_s']:>8.3f} {r['cpu_s']:>8.3f} "
                  f"{r['peak'] / mib:>9.1f} {r['wall_s'] / base['wall_s']:>7.2f} "
                  f"{r['cpu_s'] / base['cpu_s']:>6.2f} {r['peak'] / max(base['peak'], 1):>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
