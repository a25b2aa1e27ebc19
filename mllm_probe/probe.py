"""One probe run: inputs -> model forward with attention capture -> attention bundle."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mllm_probe.adapters import Adapter, Prompt
from mllm_probe.bundle import DEFAULT_MODALITIES, Bundle, EncoderBlocks, make_bundle
from mllm_probe.capture import (
    CAPTURE_IMPLEMENTATION,
    DEFAULT_CHUNK_ELEMENTS,
    CapturePlan,
    CaptureResult,
    capturing,
)
from mllm_probe.intervention import Intervention, active_interventions, intervening

#: Query-set names besides modality names and explicit positions.
QUERY_KINDS = ("all", "last", "answer")


def resolve_query_set(query: str | Sequence[int], token_modality: np.ndarray,
                      prompt_length: int) -> tuple[np.ndarray, dict]:
    """Positions (Q,) of the query rows and their description for the bundle.

    ``query``: "all"; "last" (last prompt position); "answer" (positions after the prompt);
    a modality name ("text", "audio", "vision", "special": every position of it); or positions
    (a sequence of ints or a comma-separated string; negative counts from the end).
    """
    S = int(np.asarray(token_modality).size)
    if isinstance(query, str) and query in QUERY_KINDS:
        if query == "all":
            idx = np.arange(S)
        elif query == "last":
            idx = np.array([prompt_length - 1])
        else:
            idx = np.arange(prompt_length, S)
            if idx.size == 0:
                raise ValueError("query set 'answer' needs an answer: generate answer tokens first")
        return idx.astype(np.int64), {"kind": query}
    if isinstance(query, str) and query in DEFAULT_MODALITIES:
        code = DEFAULT_MODALITIES.index(query)
        idx = np.flatnonzero(np.asarray(token_modality) == code)
        if idx.size == 0:
            raise ValueError(f"query set {query!r}: the input has no {query} positions")
        return idx.astype(np.int64), {"kind": "modality", "modality": query}
    if isinstance(query, str):
        try:
            query = [int(p) for p in query.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"query set {query!r}: expected one of {QUERY_KINDS}, a modality "
                             f"name {DEFAULT_MODALITIES} or comma-separated positions") from None
    positions = [int(p) for p in query]
    if not positions:
        raise ValueError("query set is empty")
    bad = [p for p in positions if not -S <= p < S]
    if bad:
        raise ValueError(f"query positions {bad} out of range for a sequence of length {S}")
    idx = np.unique([p % S for p in positions])
    return idx.astype(np.int64), {"kind": "indices", "positions": positions}


def encoder_modality(name: str) -> str:
    """Modality of an encoder from its module name ("audio_tower" -> audio, "visual" -> vision)."""
    lowered = name.lower()
    if "audio" in lowered:
        return "audio"
    if any(k in lowered for k in ("visual", "vision", "image")):
        return "vision"
    return "encoder"


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "numpy", "safetensors", "xmodal"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def capture_prompt(adapter: Adapter, prompt: Prompt, query_index: np.ndarray, *,
            full_map_layers: Iterable[int] = (), chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
            ) -> CaptureResult:
    """Run one forward pass of ``adapter.model`` with the capture attention; reduced result."""
    plan = CapturePlan(prompt.token_modality, query_index, len(DEFAULT_MODALITIES),
                       frozenset(int(layer) for layer in full_map_layers), chunk_elements)
    with capturing(adapter.model, plan) as recorder:
        adapter.forward(prompt, attn_implementation=CAPTURE_IMPLEMENTATION)
    return recorder.result()


def probe(adapter: Adapter, prompt: Prompt, *, query: str | Sequence[int] = "last",
          answer_tokens: int = 0, full_map_layers: Iterable[int] = (),
          inputs: Sequence[Mapping[str, Any]] = (), chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
          extra: Mapping[str, Any] | None = None,
          interventions: Sequence[Intervention] = ()) -> Bundle:
    """Capture the modality-block attention of ``prompt`` and return it as a bundle.

    ``answer_tokens`` > 0 first generates that many answer tokens greedily and appends them (the
    query set "answer" then selects them). ``inputs`` describes the input files (path, kind,
    sha256).
    ``interventions`` act on the answer and the captured pass (`mllm_probe.intervention`); those
    of an enclosing `intervening` context act too. The bundle records the ones that acted.
    """
    with intervening(adapter, interventions):
        return _probe(adapter, prompt, query, answer_tokens, full_map_layers, inputs,
                      chunk_elements, extra)


def _probe(adapter, prompt, query, answer_tokens, full_map_layers, inputs, chunk_elements,
           extra) -> Bundle:
    extra = dict(extra or {})
    if answer_tokens > 0:
        answer = adapter.generate(prompt, max_new_tokens=answer_tokens)
        extra["answer_text"] = adapter.decode(answer)
        extra["answer_ids"] = [int(a) for a in answer]
        prompt = adapter.append_answer(prompt, answer)
    elif query == "answer":
        raise ValueError("query set 'answer' needs answer_tokens > 0")
    query_index, query_set = resolve_query_set(query, prompt.token_modality, prompt.prompt_length)
    result = capture_prompt(adapter, prompt, query_index, full_map_layers=full_map_layers,
                     chunk_elements=chunk_elements)
    encoders = {name: EncoderBlocks((encoder_modality(name),),
                                    adapter.encoder_layer_types(name, len(block)), block,
                                    result.encoder_visible_count[name])
                for name, block in result.encoder_block_mass.items()}
    extra["input_ids"] = [int(i) for i in prompt.input_ids]
    extra["prompt_length"] = int(prompt.prompt_length)
    return make_bundle(
        result.block_mass, DEFAULT_MODALITIES, adapter.layer_types(), prompt.token_modality,
        query_index, query_set=query_set, row_mass=result.row_mass,
        visible_count=result.visible_count, row_visible=result.row_visible, entropy=result.entropy,
        full_maps=result.full_maps, encoder_entropy=result.encoder_entropy, encoders=encoders,
        model=adapter.describe(), prompt=prompt.text, inputs=tuple(dict(i) for i in inputs),
        versions=library_versions(), extra=extra,
        interventions=tuple(i.to_json() for i in active_interventions()))


def probe_files(adapter: Adapter, text: str, *, audio=None, video=None, frames=None, image=None,
                num_frames: int | None = 8, system: str | None = None,
                processor_kwargs: Mapping[str, Any] | None = None, **probe_kwargs) -> Bundle:
    """`probe` on input files: ``audio`` (wav or any audio/video container), ``video`` (a video
    file) or ``frames`` (a folder of images), ``image`` (an image file); hashes go in the bundle."""
    from mllm_probe import media

    if video is not None and frames is not None:
        raise ValueError("give either a video file or a frames folder, not both")
    described, kwargs = [], {}
    if audio is not None:
        kwargs["audio"] = media.load_audio(audio, adapter.sampling_rate)
        described.append({"kind": "audio", "path": str(audio), "sha256": media.file_sha256(audio)})
    if video is not None:
        kwargs["video"] = media.load_video_frames(video, num_frames)
        described.append({"kind": "video", "path": str(video), "sha256": media.file_sha256(video)})
    if frames is not None:
        kwargs["video"] = media.load_frames_folder(frames, num_frames)
        names = sorted(n for n in os.listdir(frames) if n.lower().endswith(media.IMAGE_SUFFIXES))
        digest = hashlib.sha256("".join(media.file_sha256(os.path.join(frames, n))
                                        for n in names).encode()).hexdigest()
        described.append({"kind": "frames", "path": str(frames), "sha256": digest})
    if image is not None:
        kwargs["image"] = media.load_image(image)
        described.append({"kind": "image", "path": str(image), "sha256": media.file_sha256(image)})
    prompt = adapter.build_inputs(text, system=system, processor_kwargs=processor_kwargs, **kwargs)
    return probe(adapter, prompt, inputs=described, **probe_kwargs)


__all__ = ["QUERY_KINDS", "capture_prompt", "encoder_modality", "library_versions", "probe",
           "probe_files", "resolve_query_set"]
