"""Tiny random models for emotion tests and benchmarks (built offline, see `mllm_probe.tiny`).

The tiny word-level tokenizers of `mllm_probe.tiny` split on whitespace only, so the JSON answer
``[{"emotion": "angry"}]`` would be one unknown word for every label. `save_tiny_emotion_model`
adds punctuation splitting to the saved tokenizer: the answers then differ in the label word.
"""

from __future__ import annotations

import json
import os

ARCHITECTURES = ("qwen2_5_omni", "gemma3n")


def save_tiny_emotion_model(arch: str, path, *, seed: int = 0, **kwargs) -> str:
    """Write a tiny model folder of architecture ``arch`` (see `ARCHITECTURES`) whose tokenizer
    isolates punctuation."""
    from mllm_probe.tiny import save_tiny_gemma3n, save_tiny_qwen_omni

    if arch == "qwen2_5_omni":
        path = save_tiny_qwen_omni(path, seed=seed, full=kwargs.pop("full", False), **kwargs)
    elif arch == "gemma3n":
        path = save_tiny_gemma3n(path, seed=seed, **kwargs)
    else:
        raise ValueError(f"tiny model architecture must be one of {ARCHITECTURES}, got {arch!r}")
    tokenizer_file = os.path.join(path, "tokenizer.json")
    with open(tokenizer_file) as f:
        spec = json.load(f)
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "Punctuation", "behavior": "Isolated"}]}
    with open(tokenizer_file, "w") as f:
        json.dump(spec, f)
    return path


__all__ = ["ARCHITECTURES", "save_tiny_emotion_model"]
