"""mllm_probe: capture self- and cross-modal attention of multimodal LLMs into attention bundles.

torch + transformers, no JAX. Imports are lazy: ``import mllm_probe.bundle`` (numpy, json,
safetensors only) pulls in neither torch nor transformers.

Modules: ``bundle`` (file format), ``modality`` (token modality from config ids), ``capture``
(registered attention function, on-the-fly reduction), ``adapters`` (Qwen2.5-Omni thinker,
Gemma 3n, generic HF models), ``media`` (wav / video / image files), ``probe`` (one run ->
bundle), ``figures`` (plots of a bundle), ``batch`` (folders and manifests), ``tiny`` (tiny
random models for tests).
"""

from __future__ import annotations

import importlib
import sys

_EXPORTS = {
    "bundle": ("Bundle", "BundleError", "EncoderBlocks", "FORMAT_VERSION", "bundles_equal",
               "load_bundle", "make_bundle", "save_bundle", "validate_bundle"),
    "modality": ("MODALITIES", "ModalitySpec", "spans", "spec_from_config", "token_modality"),
    "capture": ("CAPTURE_IMPLEMENTATION", "CapturePlan", "CaptureResult", "capture_attention",
                "capturing", "register_capture"),
    "adapters": ("Adapter", "Gemma3nAdapter", "GenericAdapter", "Prompt", "QwenOmniAdapter",
                 "load_adapter"),
    "media": ("file_sha256", "load_audio", "load_frames_folder", "load_image",
              "load_video_frames"),
    "probe": ("capture_prompt", "probe", "probe_files", "resolve_query_set"),
    "figures": ("plot_bundle",),
    "batch": ("BatchItem", "read_manifest", "run_batch"),
    "intervention": ("Intervention", "intervening", "parse_intervention"),
}
__all__ = ["Adapter", "BatchItem", "Bundle", "BundleError", "CAPTURE_IMPLEMENTATION",
    "CapturePlan", "CaptureResult", "EncoderBlocks", "FORMAT_VERSION", "Gemma3nAdapter",
    "GenericAdapter", "Intervention", "MODALITIES", "ModalitySpec", "Prompt", "QwenOmniAdapter",
    "bundles_equal", "capture_attention", "capture_prompt", "capturing", "file_sha256",
    "intervening", "load_adapter",
    "load_audio", "load_bundle", "load_frames_folder", "load_image", "load_video_frames",
    "make_bundle", "parse_intervention", "plot_bundle", "probe", "probe_files", "read_manifest",
    "register_capture",
    "resolve_query_set", "run_batch", "save_bundle", "spans", "spec_from_config",
    "token_modality", "validate_bundle"]


def _lazy_getattr(package: str, exports: dict[str, tuple[str, ...]]):
    """The module ``__getattr__`` of a package whose names live in its submodules (``exports``:
    submodule -> names): a name is imported on first use and then kept in the package."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


__getattr__ = _lazy_getattr(__name__, _EXPORTS)
