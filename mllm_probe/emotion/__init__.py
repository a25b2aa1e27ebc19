"""The emotion experiment of the source paper: zero-shot emotion classification of CREMA-D clips
under Face+Voice, Face-only and Voice-only inputs, with prompts that forbid 1-4 of the 6 labels,
and the error-attractor analysis of the predictions.

Modules: ``prompts`` (labels, template, the 57 variants, answer parsing), ``datasets`` (CREMA-D
layout, generic manifest), ``preprocess`` (the model cards' media preprocessing: qwen-omni-utils
for Qwen2.5-Omni), ``conditions`` (decoded media -> the three conditions), ``tokens`` (tokens
per modality), ``plan`` (a run's clips, tokens, passes and memory before loading weights),
``scoring`` (media prefix encoded once, its cache reused for all variants), ``table`` (resumable
predictions CSV), ``attractors`` (numpy statistics: confusion, error graph, hierarchy, JS
distances), ``statistics`` (the claim test calibrated under its null, three analyses, actor
resampling), ``simulate`` (tables with a known answer),
``figures`` (matplotlib), ``experiment`` (the run loop), ``tiny`` (tiny models for tests).
Imports are lazy: ``attractors``, ``statistics``, ``simulate``, ``prompts``, ``table`` and
``datasets`` need no torch.
"""

from __future__ import annotations

from mllm_probe import _lazy_getattr

_EXPORTS = {
    "prompts": ("LABELS", "Variant", "answer_text", "parse_answer", "prompt_text", "variants"),
    "datasets": ("Clip", "Dataset", "KNOWN_BAD", "Skipped", "read_cremad", "read_manifest"),
    "conditions": ("CONDITIONS", "Media", "apply_condition", "load_media"),
    "preprocess": ("Preprocessing", "load_clip_media"),
    "plan": ("make_plan", "render_plan"),
    "scoring": ("build_prefix", "encode_prefix", "generate", "label_scores",
                "label_scores_recomputed"),
    "table": ("PredictionTable", "read_table"),
    "attractors": ("Predictions", "analyze", "from_rows", "js_distance"),
    "experiment": ("RunConfig", "run"),
    "statistics": ("analyses", "claim", "holm"),
}
__all__ = ["CONDITIONS", "KNOWN_BAD", "LABELS", "Clip", "Dataset", "Media", "PredictionTable",
           "Predictions", "Preprocessing", "RunConfig", "Skipped", "Variant", "analyses", "analyze",
           "answer_text",
           "apply_condition", "build_prefix", "claim", "encode_prefix", "from_rows", "generate",
           "holm",
           "js_distance", "label_scores", "label_scores_recomputed", "load_clip_media",
           "load_media", "make_plan", "parse_answer",
           "prompt_text", "read_cremad", "read_manifest", "read_table", "render_plan", "run",
           "variants"]


__getattr__ = _lazy_getattr(__name__, _EXPORTS)
