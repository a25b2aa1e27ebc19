"""``xmodal probe``: run a multimodal model on audio/video/text and write an attention bundle.

One item: ``--audio/--video/--frames/--image --prompt --out B.bundle``.
Batch: ``--manifest M.csv`` or ``--input-dir DIR`` with ``--out-dir DIR`` (resumable).
"""

from __future__ import annotations

import argparse
import os

from xmodal.arguments import int_list, nonnegative_int


def _intervention(text: str):
    from mllm_probe.intervention import parse_intervention

    try:
        return parse_intervention(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_intervene_option(p) -> None:
    """``--intervene SPEC`` (repeatable), shared by the commands that run a model."""
    p.add_argument("--intervene", type=_intervention, action="append", default=[],
                   metavar="SPEC",
                   help="change the attention logits of a modality block in a layer range: "
                        "QUERY<-KEY:scale=F[:layers=A-B] (logits times F) or "
                        "QUERY<-KEY:knockout[:layers=A-B] (block removed, rows renormalised); "
                        "modalities text, audio, vision, special; layers 0-based, inclusive "
                        "(default all); repeatable. See docs/interventions.md")


def check_interventions(args, adapter) -> None:
    """ValueError naming ``--intervene`` if a layer range does not fit the loaded model."""
    from mllm_probe.capture import language_attention_modules

    if args.intervene:
        layers = len(language_attention_modules(adapter.model))
        for i in args.intervene:
            try:
                i.check_layers(layers)
            except ValueError as err:
                raise ValueError(f"--intervene: {err}") from None


HELP = "capture modality-block attention of a multimodal model into a bundle"
DESCRIPTION = (
    "Run a model (Qwen2.5-Omni, Gemma 3n, or any HF model with modality token ids) on "
    "audio/video/image/text inputs and save its self- and cross-modal attention, reduced to "
    "modality blocks per layer and head, as an attention bundle.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="model folder, or hub id resolved in the local Hugging Face cache")
    p.add_argument("--revision", help="model revision (hub ids)")
    p.add_argument("--allow-download", action="store_true",
                   help="let transformers download a hub id that is not cached")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    p.add_argument("--device", default="cpu", help="torch device, or 'auto' to spread over GPUs")
    item = p.add_argument_group("one item")
    item.add_argument("--audio", help="audio file (wav, or any container with an audio stream)")
    visual = item.add_mutually_exclusive_group()
    visual.add_argument("--video", help="video file")
    visual.add_argument("--frames", help="folder of frame images")
    visual.add_argument("--image", help="image file")
    item.add_argument("--out", help="bundle file to write")
    batch = p.add_argument_group("batch")
    source = batch.add_mutually_exclusive_group()
    source.add_argument("--manifest",
                        help="CSV manifest (columns id,audio,video,frames,image,prompt)")
    source.add_argument("--input-dir", help="folder of media files grouped by name stem")
    batch.add_argument("--out-dir", help="folder for <id>.bundle files (done items are skipped)")
    p.add_argument("--prompt", help="text prompt (batch: default for rows without one)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--query", default="last",
                   help="query rows: all, last, answer, a modality (text/audio/vision/special) or "
                        "comma-separated positions (default: last)")
    p.add_argument("--answer-tokens", type=nonnegative_int, default=0,
                   help="generate this many answer tokens first (needed for --query answer)")
    p.add_argument("--full-map-layers", type=int_list, default=(),
                   help="comma-separated layers whose full attention rows are saved")
    p.add_argument("--num-frames", type=nonnegative_int, default=8,
                   help="frames sampled from a video or frames folder (default 8)")
    p.add_argument("--figure", action="store_true",
                   help="also write an attention figure (PNG) beside each bundle")
    p.add_argument("--figure-layer", type=int, help="layer of the figure's heatmap (default last)")
    add_intervene_option(p)


def _check_args(args) -> str:
    """Validate argument combinations and paths before loading anything; returns the mode."""
    single = any(getattr(args, a) for a in ("audio", "video", "frames", "image", "out"))
    batch = bool(args.manifest or args.input_dir or args.out_dir)
    if single and batch:
        raise ValueError("--out/--audio/--video/--frames/--image (one item) and "
                         "--manifest/--input-dir/--out-dir (batch) cannot be combined")
    if batch:
        if not (args.manifest or args.input_dir):
            raise ValueError("--out-dir needs --manifest or --input-dir")
        if not args.out_dir:
            raise ValueError("--out-dir is required with --manifest or --input-dir")
        if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
            raise ValueError(f"--out-dir {args.out_dir}: exists and is not a directory")
        mode = "batch"
    else:
        if not args.out:
            raise ValueError("--out is required (or use --manifest/--input-dir with --out-dir)")
        if not args.prompt:
            raise ValueError("--prompt is required")
        for name in ("audio", "video", "image"):
            path = getattr(args, name)
            if path and not os.path.isfile(path):
                raise ValueError(f"--{name}: file {path!r} does not exist")
        if args.frames and not os.path.isdir(args.frames):
            raise ValueError(f"--frames: folder {args.frames!r} does not exist")
        out_parent = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_parent):
            raise ValueError(f"--out: folder {out_parent!r} does not exist")
        _check_outputs(args)
        mode = "single"
    if args.query == "answer" and args.answer_tokens == 0:
        raise ValueError("--query answer needs --answer-tokens N (N > 0)")
    m = args.model
    if not os.path.isdir(m) and (os.path.isabs(m) or m.startswith((".", "~")) or m.count("/") > 1
                                 or os.path.exists(m)):
        raise ValueError(f"--model: path {args.model!r} does not exist")
    return mode


def _check_outputs(args) -> None:
    """--out (and, with --figure, the PNG beside it): a file name, not a directory, a device or
    one of the inputs; checked before the model is loaded."""
    from xmodal.report import check_out_file

    inputs = [(f"--{name}", getattr(args, name)) for name in ("audio", "video", "image")]
    check_out_file(args.out, "--out", inputs)
    if args.figure:
        figure = os.path.splitext(args.out)[0] + ".png"
        check_out_file(figure, "--figure", inputs)


def _check_figure_layer(args, adapter) -> None:
    """--figure-layer against the model's layers, once its config is read and before it runs."""
    if args.figure_layer is None:
        return
    if not args.figure:
        raise ValueError("--figure-layer needs --figure")
    n = len(adapter.layer_types())
    if not 0 <= args.figure_layer < n:
        raise ValueError(f"--figure-layer {args.figure_layer}: the model has layers 0 .. {n - 1}")


def load_model(args, *, weights: bool = True):
    """The model adapter of ``--model`` with ``--revision``, ``--dtype``, ``--device`` and
    ``--allow-download`` (shared by the commands that run a model); ``weights=False``: on the
    meta device, nothing but the config and processor read."""
    import torch

    from mllm_probe.adapters import load_adapter
    from xmodal.report import check_torch_device

    if weights:
        check_torch_device(args.device)
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    device_map = None if args.device == "cpu" else args.device
    try:
        return load_adapter(args.model, revision=args.revision, dtype=dtype,
                            device_map=device_map if weights else None,
                            local_files_only=not args.allow_download, weights=weights)
    except ValueError as err:
        raise ValueError(f"--model: {err}") from err


def run(args) -> int:
    mode = _check_args(args)
    if mode == "batch":
        from mllm_probe.batch import read_manifest, scan_folder

        items = read_manifest(args.manifest) if args.manifest else scan_folder(args.input_dir)
        if not args.prompt and any(i.prompt is None for i in items):
            raise ValueError("--prompt is required for items without a prompt in the manifest")

    from mllm_probe.bundle import save_bundle
    from mllm_probe.probe import probe_files

    adapter = load_model(args)
    check_interventions(args, adapter)
    _check_figure_layer(args, adapter)

    def one(audio, video, frames, image, prompt, out):
        bundle = probe_files(adapter, prompt, audio=audio, video=video, frames=frames, image=image,
                             num_frames=args.num_frames or None, system=args.system,
                             query=args.query, answer_tokens=args.answer_tokens,
                             full_map_layers=args.full_map_layers,
                             interventions=args.intervene)
        save_bundle(out, bundle)
        if args.figure:
            from mllm_probe.figures import plot_bundle

            plot_bundle(bundle, os.path.splitext(out)[0] + ".png", layer=args.figure_layer)
        return bundle

    if mode == "single":
        bundle = one(args.audio, args.video, args.frames, args.image, args.prompt, args.out)
        print(f"wrote {args.out}: {bundle.num_layers} layers x {bundle.num_heads} heads, "
              f"{len(bundle.token_modality)} positions, {len(bundle.query_index)} query rows")
        return 0

    from mllm_probe.batch import run_batch

    report = run_batch(items, args.out_dir, lambda item, out: one(
        item.audio, item.video, item.frames, item.image, item.prompt or args.prompt, out))
    print(f"done {len(report['done'])}, skipped {len(report['skipped'])}, "
          f"failed {len(report['failed'])}")
    return 1 if report["failed"] else 0
