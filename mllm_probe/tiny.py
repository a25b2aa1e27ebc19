"""Tiny random-weight instances of the probed architectures, built offline from configs.

For tests, benchmarks and smoke runs: each ``save_tiny_*`` writes a model folder (config,
safetensors weights, processor with a word-level tokenizer and a chat template) that
`mllm_probe.load_adapter` loads like a real checkpoint. Token ids line up as the models require:
Qwen's mrope sections sum to head_dim / 2 and its vision start/end ids are set; Gemma 3n's image
and end-of-image ids lie in [vision offset, audio offset), its audio ids at or above the audio
offset, and the text vocabulary covers every id.
"""

from __future__ import annotations

import os

import torch

# Qwen2.5-Omni placeholder and delimiter ids of the tiny config (vocabulary 99).
QWEN_IDS = {"<pad>": 0, "<|AUDIO|>": 1, "<|IMAGE|>": 2, "<|VIDEO|>": 3, "<|audio_bos|>": 4,
            "<|audio_eos|>": 5, "user": 6, "<|vision_bos|>": 7, "<|vision_eos|>": 8,
            "<|im_start|>": 9, "<|im_end|>": 10, "<unk>": 11}
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}"
    "{% if c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif c['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif c['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# Gemma 3n ids of the tiny config (vocabulary 112; vision soft tokens [96, 104), audio [104, 112)).
GEMMA_IDS = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<start_of_turn>": 4,
             "<end_of_turn>": 5, "<start_of_image>": 90, "<start_of_audio>": 91,
             "<end_of_image>": 96, "<image_soft_token>": 97, "<end_of_audio>": 104,
             "<audio_soft_token>": 105}
GEMMA_TEMPLATE = (
    "<bos>{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else "
    "m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'audio' %}<audio_soft_token>"
    "{% elif c['type'] == 'image' %}<image_soft_token>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

WORDS = tuple(("system user assistant model what emotion is this the voice face say answer json "
               "label angry disgust fear happy neutral sad a an of in and to it").split())


def _word_tokenizer(fixed: dict[str, int], vocab_size: int, extra_special: dict[str, str], **named):
    """A word-level fast tokenizer with ``fixed`` special ids and filler words up to vocab_size."""
    import tokenizers
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = dict(fixed)
    free = (i for i in range(vocab_size) if i not in set(fixed.values()))
    for word in WORDS + tuple(f"w{k}" for k in range(vocab_size)):
        if len(vocab) == vocab_size:
            break
        if word not in vocab:
            vocab[word] = next(free)
    tk = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                           for t in fixed if t not in ("user",)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>",
                                   extra_special_tokens=extra_special, **named)


# ----------------------------------------------------------------------------- Qwen2.5-Omni

def tiny_qwen_omni_thinker_config(num_layers: int = 4):
    """``Qwen2_5OmniThinkerConfig`` of a ~110 K-parameter thinker (text hidden size 32, 4 heads)."""
    from transformers import Qwen2_5OmniThinkerConfig

    return Qwen2_5OmniThinkerConfig(
        audio_config=dict(d_model=32, encoder_attention_heads=4, encoder_ffn_dim=32,
                          encoder_layers=2, num_mel_bins=20, max_source_positions=1500,
                          n_window=100, output_dim=32),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=4,
                           patch_size=14, spatial_merge_size=1, temporal_patch_size=2,
                           out_hidden_size=32, fullatt_block_indexes=[1], window_size=14),
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=37,
                         num_hidden_layers=num_layers, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2],
                                          "rope_theta": 1e6},
                         tie_word_embeddings=False, use_sliding_window=False,
                         eos_token_id=QWEN_IDS["<|im_end|>"], pad_token_id=0),
        audio_token_index=1, image_token_index=2, video_token_index=3, audio_start_token_id=4,
        audio_end_token_id=5, user_token_id=6, vision_start_token_id=7, vision_end_token_id=8,
    )


def tiny_qwen_omni_thinker(seed: int = 0):
    """(model, inputs, token modality) of a random tiny Qwen2.5-Omni thinker (eager attention)
    and one prompt of 27 positions: text, 7 audio, 4 image and delimiter tokens, with random
    audio features and pixels drawn from ``seed``."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from mllm_probe.modality import spec_from_config, token_modality

    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
        tiny_qwen_omni_thinker_config(), attn_implementation="eager").eval()
    ids = torch.tensor([[9, 6, 4] + [1] * 7 + [5, 7] + [2] * 4 + [8, 20, 21, 22, 23, 10, 9, 13]])
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                  input_features=torch.randn(1, 20, 30),
                  feature_attention_mask=torch.ones(1, 30, dtype=torch.long),
                  pixel_values=torch.randn(4, 3 * 14 * 14 * 2),
                  image_grid_thw=torch.tensor([[1, 2, 2]]))
    return model, inputs, token_modality(ids[0].numpy(), spec_from_config(model.config))


def tiny_qwen_omni_processor():
    """A ``Qwen2_5OmniProcessor`` from components: 20 mel bins, 1 s audio windows, 28 px images."""
    from transformers import Qwen2_5OmniProcessor, WhisperFeatureExtractor
    from transformers.utils import is_torchvision_available

    tokenizer = _word_tokenizer(
        QWEN_IDS, 99,
        {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
         "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
         "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"},
        eos_token="<|im_end|>")
    features = WhisperFeatureExtractor(feature_size=20, sampling_rate=16000, hop_length=160,
                                       chunk_length=1, n_fft=400)
    pixels = {"min_pixels": 28 * 28, "max_pixels": 56 * 56}
    if is_torchvision_available():
        from transformers import Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        image = Qwen2VLImageProcessor(patch_size=14, temporal_patch_size=2, merge_size=1, **pixels)
        video = Qwen2VLVideoProcessor(patch_size=14, temporal_patch_size=2, merge_size=1,
                                      size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56},
                                      **pixels)
    else:  # transformers' video processors need torchvision; images fall back to PIL
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        image = Qwen2VLImageProcessorPil(patch_size=14, temporal_patch_size=2, merge_size=1,
                                         **pixels)
        video = None
    return Qwen2_5OmniProcessor(image_processor=image, video_processor=video,
                                feature_extractor=features, tokenizer=tokenizer,
                                chat_template=QWEN_TEMPLATE)


def save_tiny_qwen_omni(path, *, num_layers: int = 4, seed: int = 0, full: bool = True) -> str:
    """Write a tiny Qwen2.5-Omni folder; ``full`` saves the whole model (thinker under
    ``thinker.``) like the released checkpoints, else the thinker alone."""
    from transformers import (
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
        Qwen2_5OmniThinkerForConditionalGeneration,
    )

    path = os.fspath(path)
    thinker = tiny_qwen_omni_thinker_config(num_layers)
    torch.manual_seed(seed)
    if full:
        config = Qwen2_5OmniConfig(thinker_config=thinker.to_dict(), enable_audio_output=False)
        model = Qwen2_5OmniForConditionalGeneration(config)
    else:
        model = Qwen2_5OmniThinkerForConditionalGeneration(thinker)
    model.save_pretrained(path)
    tiny_qwen_omni_processor().save_pretrained(path)
    return path


# ----------------------------------------------------------------------------- Gemma 3n

def tiny_gemma3n_config(num_layers: int = 4, sliding_window: int = 16, image_size: int = 64):
    """``Gemma3nConfig`` with a resnet18 vision tower ((image_size / 32)^2 soft tokens)."""
    from transformers import Gemma3nConfig

    layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention"
                   for i in range(num_layers)]
    return Gemma3nConfig(
        text_config=dict(vocab_size=112, vocab_size_per_layer_input=96, hidden_size=32,
                         hidden_size_per_layer_input=8, intermediate_size=64,
                         num_hidden_layers=num_layers, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, num_kv_shared_layers=2,
                         altup_num_inputs=2, laurel_rank=4, layer_types=layer_types,
                         sliding_window=sliding_window, activation_sparsity_pattern=None,
                         bos_token_id=2, eos_token_id=1, pad_token_id=0),
        audio_config=dict(input_feat_size=32, hidden_size=32, conf_num_attention_heads=4,
                          conf_num_hidden_layers=2, sscp_conv_channel_size=(16, 8),
                          conf_conv_kernel_size=3, conf_attention_chunk_size=4,
                          conf_attention_context_left=5, vocab_size=8, vocab_offset=104),
        vision_config=dict(architecture="resnet18", hidden_size=512, vocab_size=8,
                           vocab_offset=96),
        audio_soft_tokens_per_image=8, vision_soft_tokens_per_image=(image_size // 32) ** 2,
        boi_token_id=90, eoi_token_id=96, image_token_id=97, boa_token_id=91, eoa_token_id=104,
        audio_token_id=105,
    )


def tiny_gemma3n(seed: int = 0, sliding_window: int = 6):
    """(model, inputs, token modality) of a random tiny Gemma 3n (eager attention, sliding
    windows of ``sliding_window`` keys) and one prompt of 28 positions with 4 audio and 8 image
    soft tokens, random audio features and pixels drawn from ``seed``."""
    from transformers import Gemma3nForConditionalGeneration

    from mllm_probe.modality import spec_from_config, token_modality

    torch.manual_seed(seed)
    model = Gemma3nForConditionalGeneration._from_config(
        tiny_gemma3n_config(sliding_window=sliding_window), attn_implementation="eager").eval()
    ids = torch.tensor([[2, 4, 9, 90] + [97] * 4 + [96, 91] + [105] * 8
                        + [104, 20, 21, 22, 23, 24, 25, 5, 4, 8]])
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                  input_features=torch.randn(1, 17, 32),
                  input_features_mask=torch.ones(1, 17, dtype=torch.bool),
                  pixel_values=torch.randn(1, 3, 64, 64))
    return model, inputs, token_modality(ids[0].numpy(), spec_from_config(model.config))


def tiny_gemma3n_processor(image_size: int = 64):
    """A ``Gemma3nProcessor`` from components: 32 mel bins, 8 audio and (size/32)^2 image tokens."""
    from transformers import Gemma3nAudioFeatureExtractor, Gemma3nProcessor, SiglipImageProcessor

    tokenizer = _word_tokenizer(
        GEMMA_IDS, 112,
        {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
         "eoi_token": "<end_of_image>", "audio_token": "<audio_soft_token>",
         "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"},
        bos_token="<bos>", eos_token="<eos>")
    return Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(feature_size=32),
        image_processor=SiglipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer, chat_template=GEMMA_TEMPLATE, audio_seq_length=8,
        image_seq_length=(image_size // 32) ** 2)


def save_tiny_gemma3n(path, *, num_layers: int = 4, sliding_window: int = 16, seed: int = 0) -> str:
    """Write a tiny Gemma 3n folder (needs timm, hence torchvision, for the vision tower)."""
    from transformers import Gemma3nForConditionalGeneration

    path = os.fspath(path)
    torch.manual_seed(seed)
    model = Gemma3nForConditionalGeneration(tiny_gemma3n_config(num_layers, sliding_window))
    model.save_pretrained(path)
    tiny_gemma3n_processor().save_pretrained(path)
    return path


__all__ = ["GEMMA_IDS", "QWEN_IDS", "save_tiny_gemma3n", "save_tiny_qwen_omni", "tiny_gemma3n",
           "tiny_gemma3n_config", "tiny_gemma3n_processor", "tiny_qwen_omni_processor",
           "tiny_qwen_omni_thinker", "tiny_qwen_omni_thinker_config"]
