"""The emotion run: for every clip x condition, encode the media prefix once, score the 57 prompt
variants (label log-probabilities, batched on the cached prefix) and optionally generate their
JSON answers; append the rows to the resumable predictions table; save attention bundles of the
unperturbed prompt for the first ``bundles`` clips of each condition.

Clips whose media fail to decode are skipped with the reason (logged, returned) and the run goes on.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import torch

from mllm_probe.adapters import Adapter
from mllm_probe.emotion import scoring
from mllm_probe.emotion import tokens as _tokens
from mllm_probe.emotion.conditions import PERCEPTION_OF, Media, apply_condition
from mllm_probe.emotion.datasets import Clip, Dataset, Skipped
from mllm_probe.emotion.preprocess import Preprocessing, load_clip_media
from mllm_probe.emotion.prompts import LABELS, TEMPLATE, parse_answer, prompt_text, variants
from mllm_probe.emotion.table import PredictionTable
from mllm_probe.intervention import describe
from mllm_probe.modality import token_modality
from surrogate.progress import Progress


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Options of a run that change its predictions (stored beside the table, checked on resume)."""

    conditions: tuple[str, ...]
    preprocessing: Preprocessing = dataclasses.field(default_factory=Preprocessing)
    generate: bool = True
    max_new_tokens: int = 16
    batch_size: int = 64
    bundles: int = 0
    processor_kwargs: dict | None = None
    interventions: tuple = ()   # `mllm_probe.intervention.Intervention`s the run carries

    def fingerprint(self, adapter: Adapter, dataset: Dataset) -> dict:
        """What must match for a table to be resumed."""
        return {"model": adapter.model_id, "config_hash": adapter.describe()["config_hash"],
                "data": os.path.abspath(dataset.source), "conditions": list(self.conditions),
                "preprocessing": self.preprocessing.describe(), "generate": self.generate,
                "max_new_tokens": self.max_new_tokens, "template": TEMPLATE,
                "labels": list(LABELS), "processor_kwargs": self.processor_kwargs or {},
                "dtype": str(adapter.model.dtype),
                **({"intervention": describe(self.interventions)} if self.interventions else {})}


def unit_rows(clip: Clip, condition: str, scores: np.ndarray, generated: list[str] | None,
              tokens: dict | None = None) -> list[dict]:
    """Table rows of one clip x condition from (V, 6) scores, the generated answers and the
    token counts ({"prefix": {modality: n}, "prompt": [n per variant]}, see `score_unit`)."""
    rows = []
    perceived = clip.perceived.get(PERCEPTION_OF[condition], frozenset())
    for v in variants():
        s = scores[v.index]
        best = LABELS[int(np.nanargmax(s))]
        row = {"clip": clip.id, "condition": condition, "variant": v.index,
               "forbidden": ":".join(v.forbidden), "intended": clip.intended,
               "perceived": ":".join(sorted(perceived, key=LABELS.index)), "predicted": best,
               "actor": clip.actor or "",
               **{f"score_{label}": float(x) for label, x in zip(LABELS, s, strict=True)}}
        if tokens is not None:
            row.update({f"tokens_{m}": n for m, n in tokens["prefix"].items()},
                       tokens_prompt=tokens["prompt"][v.index])
        if generated is not None:
            label, status = parse_answer(generated[v.index], v.allowed)
            row.update(generated=generated[v.index], generated_label=label or "",
                       parse_status=status)
        else:
            row.update(generated="", generated_label="", parse_status="not_generated")
        rows.append(row)
    return rows


def unit_tokens(adapter: Adapter, prefix: scoring.PrefixInputs, vs) -> dict:
    """{"prefix": {modality: positions of the media prefix}, "prompt": [positions per variant]}."""
    return {"prefix": _tokens.count(token_modality(prefix.input_ids, adapter.spec)),
            "prompt": scoring.prompt_lengths(adapter.tokenizer, prefix, vs)}


def score_unit(adapter: Adapter, media: Media, config: RunConfig):
    """(scores (57, 6), generated answers or None, `unit_tokens`) of one clip x condition."""
    prefix = scoring.build_prefix(adapter, audio=media.audio, video=media.frames,
                                  processor_kwargs=config.processor_kwargs,
                                  **media.input_options())
    encoded = scoring.encode_prefix(adapter, prefix)
    vs = list(variants())
    scores = scoring.label_scores(adapter, prefix, vs, encoded=encoded,
                                  batch_size=config.batch_size)
    generated = (scoring.generate(adapter, prefix, vs, encoded=encoded,
                                  max_new_tokens=config.max_new_tokens,
                                  batch_size=config.batch_size) if config.generate else None)
    return scores, generated, unit_tokens(adapter, prefix, vs)


def save_unit_bundle(adapter: Adapter, clip: Clip, condition: str, media: Media, path: str,
                     config: RunConfig) -> None:
    """Attention bundle (last prompt row) of the unperturbed prompt of one clip x condition."""
    from mllm_probe.bundle import save_bundle
    from mllm_probe.probe import probe

    prompt = adapter.build_inputs(prompt_text(variants()[0]), audio=media.audio,
                                  video=media.frames, processor_kwargs=config.processor_kwargs,
                                  **media.input_options())
    described = [{"kind": "video", "path": clip.video}]
    if clip.audio:
        described.append({"kind": "audio", "path": clip.audio})
    bundle = probe(adapter, prompt, query="last", inputs=described,
                   extra={"clip": clip.id, "condition": condition, "intended": clip.intended})
    save_bundle(path, bundle)


def _run_unit(adapter, clip, cond, config, table, media_cache, failed, skipped, bundles_made,
              bundle_dir, progress) -> int:
    """Score one (clip, condition) unit into ``table`` (1), or record why its clip cannot be
    run (0: the clip joins ``failed`` and ``skipped``)."""
    if clip.id not in media_cache:
        media_cache.clear()
        try:
            media_cache[clip.id] = load_clip_media(clip, config.preprocessing,
                                                   adapter.sampling_rate)
        except ImportError:
            raise
        except Exception as err:  # noqa: BLE001  any decoder failure: report the clip, go on
            failed.add(clip.id)
            skipped.append(Skipped(clip.id, f"media could not be decoded: {err}", clip.video))
            progress.say(f"skip {clip.id}: media could not be decoded ({type(err).__name__}: "
                         f"{err})")
            return 0
    media = apply_condition(media_cache[clip.id], cond)
    try:
        scores, generated, tokens = score_unit(adapter, media, config)
    except (ValueError, RuntimeError) as err:  # media the processor or model cannot take
        if isinstance(err, torch.OutOfMemoryError):  # (e.g. audio longer than Gemma 3n's
            raise                                     # audio window); never hide OOM
        failed.add(clip.id)
        skipped.append(Skipped(clip.id, f"model inputs could not be built: {err}", clip.video))
        progress.say(f"skip {clip.id}: model inputs could not be built ({err})")
        return 0
    table.append(unit_rows(clip, cond, scores, generated, tokens))
    if bundles_made[cond] < config.bundles:
        path = os.path.join(bundle_dir, f"{clip.id}.{cond}.bundle")
        if not os.path.exists(path):
            save_unit_bundle(adapter, clip, cond, media, path, config)
        bundles_made[cond] += 1
    return 1


def run(adapter: Adapter, dataset: Dataset, out_dir, config: RunConfig, *, resume: bool = False,
        limit: int | None = None, log=None) -> dict:
    """Run the experiment into ``out_dir`` (predictions.csv, bundles/); returns
    {"done": units written now, "resumed": units found done, "skipped": [Skipped, ...]}."""
    log = log or sys.stderr
    scoring.answer_split(adapter.tokenizer)  # fail fast if the labels cannot be scored
    config.preprocessing.check()             # ... or the media cannot be read
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    clips = list(dataset.clips[:limit] if limit else dataset.clips)
    table = PredictionTable(os.path.join(out_dir, "predictions.csv"),
                            config.fingerprint(adapter, dataset), len(variants()), resume=resume)
    units = [(c, cond) for c in clips for cond in config.conditions]
    todo = [u for u in units if (u[0].id, u[1]) not in table.done]
    resumed = len(units) - len(todo)
    progress = Progress(len(units), desc="emotion", unit="units", stream=log, done=resumed)
    if table.dropped_rows:
        progress.say(f"resume: dropped {table.dropped_rows} rows of incomplete units")
    bundle_dir = os.path.join(out_dir, "bundles")
    if config.bundles:
        os.makedirs(bundle_dir, exist_ok=True)
        from surrogate.files import remove_partial_writes

        remove_partial_writes(bundle_dir)  # bundles a killed run was writing
    skipped = list(dataset.skipped)
    for s in dataset.skipped:
        progress.say(f"skip {s.id}: {s.reason}" + (f" ({s.path})" if s.path else ""))
    progress.say(f"{len(clips)} clips x {len(config.conditions)} conditions = {len(units)} units "
                 f"of {len(variants())} prompt variants; {resumed} done before, {len(todo)} to "
                 f"run")
    bundles_made = {cond: sum(n.endswith(f".{cond}.bundle") for n in os.listdir(bundle_dir))
                    if config.bundles else 0 for cond in config.conditions}
    done, failed = 0, set()
    media_cache: dict[str, object] = {}
    with progress:
        for clip, cond in todo:
            if clip.id not in failed:
                done += _run_unit(adapter, clip, cond, config, table, media_cache, failed, skipped,
                                  bundles_made, bundle_dir, progress)
            progress.update()  # a unit of a clip that failed counts as processed
    return {"done": done, "resumed": resumed, "skipped": skipped,
            "units": len(units), "failed_clips": sorted(failed)}


__all__ = ["RunConfig", "run", "save_unit_bundle", "score_unit", "unit_rows", "unit_tokens"]
