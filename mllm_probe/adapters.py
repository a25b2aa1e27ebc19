"""Model adapters: load a model and its processor, build inputs, report the modality of every
position.

`load_adapter` picks the adapter from the config's ``model_type``: Qwen2.5-Omni (the thinker, which
answers in text), Gemma 3n, or a generic adapter for any Hugging Face causal LM or encoder given
its modality token ids. Models load from a local folder or the Hugging Face cache; nothing is
downloaded unless ``local_files_only=False``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mllm_probe.modality import ModalitySpec, spec_from_config, token_modality


@dataclasses.dataclass(frozen=True, eq=False)
class Prompt:
    """Model inputs for one item (batch 1) and the modality of each of their S positions."""

    model_inputs: Mapping[str, Any]
    input_ids: np.ndarray        # (S,) int64
    token_modality: np.ndarray   # (S,) int32
    prompt_length: int           # positions before any appended answer
    text: str                    # the rendered prompt text


def _as_1d(ids) -> np.ndarray:
    arr = np.asarray(ids.detach().cpu() if isinstance(ids, torch.Tensor) else ids)
    if arr.ndim == 2:
        if arr.shape[0] != 1:
            raise ValueError(f"one item at a time: input_ids has batch size {arr.shape[0]}")
        arr = arr[0]
    return arr.astype(np.int64)


def config_hash(config) -> str:
    """SHA-256 of a config's full JSON (sorted keys)."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Adapter:
    """A loaded model with its processor and modality spec; subclasses know the conversation
    format."""

    architecture = "generic"

    def __init__(self, model, processor, spec: ModalitySpec, *, model_id: str,
                 revision: str | None = None):
        self.model = model.eval()
        self.processor = processor
        self.spec = spec
        self.model_id = model_id
        self.revision = revision
        self.base_attn_implementation = model.config._attn_implementation

    # -- description -------------------------------------------------------------------------
    @property
    def text_config(self):
        return self.model.config.get_text_config()

    def layer_types(self) -> tuple[str, ...]:
        """One string per language-model layer ("full_attention", "sliding_attention", ...)."""
        cfg = self.text_config
        n = cfg.num_hidden_layers
        types = getattr(cfg, "layer_types", None)
        if types:
            return tuple(str(t) for t in types)
        if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
            return ("sliding_attention",) * n
        return ("full_attention",) * n

    def encoder_layer_types(self, name: str, num_layers: int) -> tuple[str, ...]:
        """Attention kind of each layer of the media encoder ``name`` (bundle metadata)."""
        return ("full_attention",) * num_layers

    def describe(self) -> dict:
        """Model metadata for a bundle."""
        return {
            "id": self.model_id,
            "revision": self.revision,
            "config_hash": config_hash(self.model.config),
            "architecture": self.architecture,
            "model_type": self.model.config.model_type,
            "class": type(self.model).__name__,
        }

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    # -- inputs ------------------------------------------------------------------------------
    def _prompt(self, encoded: Mapping[str, Any], text: str) -> Prompt:
        ids = _as_1d(encoded["input_ids"])
        inputs = {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}
        device = self.model.device
        dtype = self.model.dtype
        for k, v in inputs.items():
            v = v.to(device)
            inputs[k] = v.to(dtype) if v.is_floating_point() else v
        return Prompt(inputs, ids, token_modality(ids, self.spec), len(ids), text)

    def conversation(self, text: str, *, audio=None, video=None, image=None,
                     system: str | None = None) -> list[dict]:
        content = []
        if video is not None:
            content.append({"type": "video"})
        if image is not None:
            content.append({"type": "image"})
        if audio is not None:
            content.append({"type": "audio"})
        content.append({"type": "text", "text": text})
        conv = [{"role": "user", "content": content}]
        if system:
            conv.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        return conv

    def render(self, conversation: list[dict]) -> str:
        template = getattr(self.processor, "chat_template", None) or getattr(
            self.tokenizer, "chat_template", None)
        if not template:
            raise ValueError(f"the processor of {self.model_id!r} has no chat template")
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True,
                                                  tokenize=False)

    def build_inputs(self, text: str, *, audio: np.ndarray | None = None,
                     video: np.ndarray | None = None, image=None, system: str | None = None,
                     processor_kwargs: Mapping[str, Any] | None = None) -> Prompt:
        """Inputs for one item: ``audio`` (T,) float32 at the processor's rate, ``video``
        (F, H, W, 3) uint8 frames, ``image`` a PIL image, ``text`` the user's prompt."""
        rendered = self.render(self.conversation(text, audio=audio, video=video, image=image,
                                                 system=system))
        kwargs = dict(processor_kwargs or {})
        if audio is not None:
            kwargs["audio"] = [np.asarray(audio, dtype=np.float32)]
        if video is not None:
            kwargs["videos"] = [np.asarray(video)]
        if image is not None:
            kwargs["images"] = [image]
        encoded = self.processor(text=rendered, return_tensors="pt", **kwargs)
        return self._prompt(encoded, rendered)

    @property
    def sampling_rate(self) -> int:
        fe = getattr(self.processor, "feature_extractor", None)
        return int(getattr(fe, "sampling_rate", 16000))

    # -- running -----------------------------------------------------------------------------
    def forward(self, prompt: Prompt, attn_implementation: str | None = None, **kwargs):
        """One forward pass without cache; ``attn_implementation`` is set for it and restored."""
        impl = attn_implementation or self.base_attn_implementation
        self.model.set_attn_implementation(impl)
        try:
            with torch.no_grad():
                return self.model(**prompt.model_inputs, use_cache=False, **kwargs)
        finally:
            self.model.set_attn_implementation(self.base_attn_implementation)

    def generate(self, prompt: Prompt, max_new_tokens: int = 16) -> np.ndarray:
        """Greedy answer ids (A,) after the prompt."""
        with torch.no_grad():
            out = self.model.generate(**prompt.model_inputs, max_new_tokens=max_new_tokens,
                                      do_sample=False)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        return _as_1d(sequences)[prompt.prompt_length:]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(np.asarray(ids)), skip_special_tokens=True)

    def append_answer(self, prompt: Prompt, answer_ids) -> Prompt:
        """The prompt with ``answer_ids`` (A,) appended (teacher forcing of a generated answer)."""
        answer = torch.as_tensor(np.asarray(answer_ids, dtype=np.int64)).view(1, -1)
        inputs = dict(prompt.model_inputs)
        answer = answer.to(inputs["input_ids"].device)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], answer], dim=1)
        for key in ("attention_mask", "token_type_ids", "mm_token_type_ids"):
            if key in inputs:
                fill = (torch.ones_like(answer) if key == "attention_mask"
                        else torch.zeros_like(answer))
                inputs[key] = torch.cat([inputs[key], fill.to(inputs[key].dtype)], dim=1)
        ids = np.concatenate([prompt.input_ids, np.asarray(answer_ids, dtype=np.int64)])
        return Prompt(inputs, ids, token_modality(ids, self.spec), prompt.prompt_length,
                      prompt.text)


class QwenOmniAdapter(Adapter):
    """Qwen2.5-Omni: the thinker (audio encoder, vision encoder, language model) answers in text."""

    architecture = "qwen2_5_omni_thinker"

    def encoder_layer_types(self, name, num_layers):
        if name == "visual":  # window attention except the full-attention blocks
            full = set(self.model.config.vision_config.fullatt_block_indexes)
            return tuple("full_attention" if i in full else "window_attention"
                         for i in range(num_layers))
        if "audio" in name:   # attention within chunks of 2 * n_window mel frames
            return ("chunked_attention",) * num_layers
        return super().encoder_layer_types(name, num_layers)

    @classmethod
    def from_pretrained(cls, path, config, **kw) -> QwenOmniAdapter:
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        if config.model_type == "qwen2_5_omni":
            # A full checkpoint: load only the thinker's weights ("thinker." prefix).
            model = _instantiate(Qwen2_5OmniThinkerForConditionalGeneration, path,
                                 config.thinker_config, kw, key_mapping={r"^thinker\.": ""})
        else:
            model = _instantiate(Qwen2_5OmniThinkerForConditionalGeneration, path, config, kw)
        processor = _processor(path, kw)
        spec = spec_from_config(model.config).with_special(processor.tokenizer.all_special_ids)
        return cls(model, processor, spec, model_id=str(path), revision=kw.get("revision"))

    def build_inputs(self, text, *, audio=None, video=None, image=None, system=None,
                     processor_kwargs=None, audio_in_video: bool = False,
                     video_fps: float | None = None):
        """As `Adapter.build_inputs`; ``audio_in_video``: ``audio`` is the track of ``video`` and
        their tokens interleave in time chunks (the model card's ``use_audio_in_video``);
        ``video_fps``: frame rate of (F, 3, H, W) frames sampled and sized already
        (qwen-omni-utils): the processor neither resamples nor resizes them."""
        if not audio_in_video and video_fps is None:
            return super().build_inputs(text, audio=audio, video=video, image=image,
                                        system=system, processor_kwargs=processor_kwargs)
        kwargs = dict(processor_kwargs or {})
        if video_fps is not None:  # sampled and sized already: the processor keeps both
            kwargs.update(fps=float(video_fps), do_sample_frames=False)
            videos_kwargs = dict(kwargs.get("videos_kwargs") or {})
            if video is not None and "size" not in videos_kwargs:
                area = int(video.shape[-2]) * int(video.shape[-1])
                videos_kwargs["size"] = {"shortest_edge": area, "longest_edge": area}
                kwargs["videos_kwargs"] = videos_kwargs
        if audio_in_video:
            if audio is None or video is None:
                raise ValueError("audio_in_video needs both the audio and the video")
            kwargs.update(_audio_in_video_kwargs(self.processor))
        if audio is not None:
            kwargs["audio"] = [np.asarray(audio, dtype=np.float32)]
        if video is not None:
            kwargs["videos"] = [video]
        if image is not None:
            kwargs["images"] = [image]
        shown = None if audio_in_video else audio   # the track has no placeholder of its own
        rendered = self.render(self.conversation(text, audio=shown, video=video, image=image,
                                                 system=system))
        encoded = self.processor(text=rendered, return_tensors="pt", **kwargs)
        prompt = self._prompt(encoded, rendered)
        if audio_in_video:
            prompt.model_inputs["use_audio_in_video"] = True
        return prompt


def _audio_in_video_kwargs(processor) -> dict:
    """Processor keywords that take ``audio[0]`` as the track of ``videos[0]``: transformers >=
    5.24 names it ``load_audio_from_video`` with ``audio_from_video_indices``; older releases take
    ``use_audio_in_video``."""
    import inspect

    for cls in type(processor).__mro__:
        call = cls.__dict__.get("__call__")
        if call is not None and "audio_from_video_indices" in inspect.signature(call).parameters:
            return {"load_audio_from_video": True, "audio_from_video_indices": [0]}
    return {"use_audio_in_video": True}


class Gemma3nAdapter(Adapter):
    """Gemma 3n: audio and image soft tokens; video is given as frames (one image each)."""

    architecture = "gemma3n"

    def encoder_layer_types(self, name, num_layers):
        if "audio" in name:  # chunks of conf_attention_chunk_size frames, left context, no right
            right = getattr(self.model.config.audio_config, "conf_attention_context_right", 0)
            return (("local_causal_attention" if not right else "local_attention"),) * num_layers
        return super().encoder_layer_types(name, num_layers)

    @classmethod
    def from_pretrained(cls, path, config, **kw) -> Gemma3nAdapter:
        from transformers import Gemma3nForConditionalGeneration

        model = _instantiate(Gemma3nForConditionalGeneration, path, config, kw)
        processor = _processor(path, kw)
        spec = spec_from_config(model.config).with_special(processor.tokenizer.all_special_ids)
        return cls(model, processor, spec, model_id=str(path), revision=kw.get("revision"))

    def conversation(self, text, *, audio=None, video=None, image=None, system=None):
        conv = super().conversation(text, audio=audio, video=None, image=image, system=system)
        if video is not None:
            frames = [{"type": "image"} for _ in range(len(video))]
            conv[-1]["content"] = frames + conv[-1]["content"]
        return conv

    def build_inputs(self, text, *, audio=None, video=None, image=None, system=None,
                     processor_kwargs=None):
        if video is None:
            return super().build_inputs(text, audio=audio, image=image, system=system,
                                        processor_kwargs=processor_kwargs)
        from PIL import Image

        if image is not None:
            raise ValueError("Gemma 3n: give either video frames or an image, not both")
        rendered = self.render(self.conversation(text, audio=audio, video=video, system=system))
        kwargs = dict(processor_kwargs or {})
        if audio is not None:
            kwargs["audio"] = [np.asarray(audio, dtype=np.float32)]
        kwargs["images"] = [[Image.fromarray(np.asarray(f)) for f in video]]
        encoded = self.processor(text=rendered, return_tensors="pt", **kwargs)
        return self._prompt(encoded, rendered)


class GenericAdapter(Adapter):
    """Any Hugging Face causal LM or encoder; modalities come from explicit token ids."""

    @classmethod
    def from_pretrained(cls, path, config, *, audio_ids=(), vision_ids=(), special_ids=(), **kw):
        from transformers import AutoModel, AutoModelForCausalLM

        archs = getattr(config, "architectures", None) or []
        auto = AutoModelForCausalLM if any(a.endswith("ForCausalLM") for a in archs) else AutoModel
        model = _instantiate(auto, path, config, kw)
        processor = _processor(path, kw)
        if audio_ids or vision_ids:
            spec = ModalitySpec(audio_ids=frozenset(audio_ids), vision_ids=frozenset(vision_ids))
        else:
            try:
                spec = spec_from_config(config)
            except ValueError:
                spec = ModalitySpec()
        tokenizer = getattr(processor, "tokenizer", processor)
        spec = spec.with_special(list(special_ids) + list(tokenizer.all_special_ids))
        return cls(model, processor, spec, model_id=str(path), revision=kw.get("revision"))

    def build_inputs(self, text, *, audio=None, video=None, image=None, system=None,
                     processor_kwargs=None):
        if audio is None and video is None and image is None and self.processor is self.tokenizer:
            encoded = self.tokenizer(text, return_tensors="pt", **dict(processor_kwargs or {}))
            return self._prompt(encoded, text)
        return super().build_inputs(text, audio=audio, video=video, image=image, system=system,
                                    processor_kwargs=processor_kwargs)

    def generate(self, prompt, max_new_tokens=16):
        if not hasattr(self.model, "generate") or not self.model.can_generate():
            raise ValueError(f"{self.model_id!r} ({type(self.model).__name__}) cannot generate an "
                             f"answer; use a prompt-only query set")
        return super().generate(prompt, max_new_tokens)


_ADAPTERS = {
    "qwen2_5_omni": QwenOmniAdapter,
    "qwen2_5_omni_thinker": QwenOmniAdapter,
    "gemma3n": Gemma3nAdapter,
}


def _instantiate(model_cls, path, config, kw: Mapping[str, Any], **extra):
    """``model_cls`` with the weights of ``path``, or, with ``kw["weights"]`` False, on the meta
    device (structure and parameter shapes only: no memory, nothing read but the config)."""
    load = _load_kwargs(kw)
    if kw.get("weights", True):
        return model_cls.from_pretrained(path, config=config, **load, **extra)
    with torch.device("meta"):
        if hasattr(model_cls, "_from_config"):
            return model_cls._from_config(config, attn_implementation=load["attn_implementation"])
        return model_cls.from_config(config, attn_implementation=load["attn_implementation"])


def _load_kwargs(kw: Mapping[str, Any]) -> dict:
    out = {"local_files_only": kw.get("local_files_only", True)}
    for name in ("revision", "dtype", "device_map"):
        if kw.get(name) is not None:
            out[name] = kw[name]
    out["attn_implementation"] = kw.get("attn_implementation") or "sdpa"
    return out


def _processor(path, kw):
    from transformers import AutoProcessor, AutoTokenizer

    load = {"local_files_only": kw.get("local_files_only", True)}
    if kw.get("revision"):
        load["revision"] = kw["revision"]
    try:
        return AutoProcessor.from_pretrained(path, **load)
    except (OSError, ValueError, KeyError, TypeError):
        return AutoTokenizer.from_pretrained(path, **load)


def looks_like_path(name: str) -> bool:
    """True for a file-system path rather than a hub id ("org/name")."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1
            or os.path.exists(name))


def load_adapter(path_or_id: str | os.PathLike, *, revision: str | None = None, dtype=None,
                 device_map=None, local_files_only: bool = True,
                 attn_implementation: str | None = None, weights: bool = True,
                 **generic) -> Adapter:
    """Load the adapter for a model folder or hub id (resolved in the local HF cache by default).

    ``weights=False`` builds the model on the meta device: config, processor and parameter
    shapes, no weights read and no memory used (for planning a run).

    ``generic`` (audio_ids, vision_ids, special_ids) applies to models without a dedicated adapter.
    Raises ValueError if the path is neither a model folder nor cached.
    """
    from transformers import AutoConfig

    path = os.fspath(path_or_id)
    if looks_like_path(path) and not os.path.isdir(path):
        raise ValueError(f"model path {path!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(path, revision=revision,
                                            local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        where = "folder" if os.path.isdir(path) else "hub id (not in the local Hugging Face cache)"
        raise ValueError(f"model {path!r}: cannot load a config from this {where}: {err}") from err
    kw = dict(revision=revision, dtype=dtype, device_map=device_map,
              local_files_only=local_files_only, attn_implementation=attn_implementation,
              weights=weights)
    cls = _ADAPTERS.get(config.model_type)
    if cls is None:
        return GenericAdapter.from_pretrained(path, config, **generic, **kw)
    if generic:
        raise ValueError(f"{sorted(generic)} apply only to generic models, not {config.model_type}")
    return cls.from_pretrained(path, config, **kw)


__all__ = ["Adapter", "Gemma3nAdapter", "GenericAdapter", "Prompt", "QwenOmniAdapter",
           "config_hash", "load_adapter", "looks_like_path"]
