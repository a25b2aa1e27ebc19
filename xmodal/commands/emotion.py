"""``xmodal emotion``: the emotion experiment of the source paper on CREMA-D (or a manifest).

Writes to ``--out``: ``predictions.csv`` (+ ``predictions.meta.json``; resumable with ``--resume``),
``skipped.csv``, ``summary.json``, ``confusion.png``, ``attractor_graph.png``, ``sankey.png``,
``js_distance.png``, ``report.md`` and, with ``--bundles N``, ``bundles/<clip>.<condition>.bundle``.
``--from-table PATH`` writes the analysis (summary.json, report.md, the figures) of an existing
predictions table: no model, no media, no torch.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path

from xmodal.arguments import (
    add_out,
    add_seed,
    json_object,
    nonnegative_int,
    positive_float,
    positive_int,
    unit_float,
)
from xmodal.commands.probe import add_intervene_option

CONDITIONS = ("face_voice", "face_only", "voice_only")


def _conditions(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names or any(n not in CONDITIONS for n in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names among {','.join(CONDITIONS)}, "
                                         f"got {text!r}")
    return names


HELP = "emotion classification under face/voice conditions and label exclusions"
DESCRIPTION = (
    "Zero-shot emotion classification (angry, disgust, fear, happy, neutral, sad) of CREMA-D clips"
    " under Face+Voice, Face-only and Voice-only inputs, with the unperturbed prompt and the 56 "
    "prompts that forbid 1-4 labels; scores the labels' log-probabilities on a media prefix "
    "encoded once per clip and condition, parses generated JSON, and analyses the error "
    "attractors.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="CREMA-D folder (AudioWAV/, VideoFlash/, processedResults/)")
    source.add_argument("--manifest", help="CSV with id,label,video[,audio,perceived_voice,"
                                           "perceived_face,perceived_multimodal,actor]")
    source.add_argument("--from-table", metavar="PATH",
                        help="analyse an existing predictions.csv (no model, media or probe "
                             "extra needed); writes summary.json, report.md and the figures")
    p.add_argument("--model",
                   help="model folder, or hub id resolved in the local Hugging Face cache "
                        "(required with --data or --manifest)")
    add_out(p, help="output folder", path=False,
            force="write into a non-empty --out (discarding the predictions there)")
    p.add_argument("--conditions", type=_conditions, default=CONDITIONS,
                   help=f"comma-separated subset of {','.join(CONDITIONS)} (default: all)")
    p.add_argument("--limit", type=positive_int,
                   help="use the first N clips that pass the file checks (clips that then fail "
                        "to decode count too)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--bundles", type=nonnegative_int, default=0,
                   help="save attention bundles of the unperturbed prompt for the first N clips "
                        "of each condition (default 0)")
    p.add_argument("--plan", action="store_true",
                   help="read the clips and the processor (no weights) and print clips usable/"
                        "skipped, tokens per modality, forward passes and peak memory per clip "
                        "for --dtype; runs nothing, writes nothing")
    p.add_argument("--preprocessing", choices=("reference", "processor"), default="reference",
                   help="media preprocessing: 'reference' = the model card's (qwen-omni-utils for "
                        "Qwen2.5-Omni; frames for Gemma 3n), 'processor' = evenly spaced frames "
                        "to the bare processor (default reference)")
    p.add_argument("--num-frames", type=positive_int,
                   help="video frames per clip (default: 2 fps for qwen-omni-utils, 8 frames "
                        "otherwise)")
    p.add_argument("--fps", type=positive_float,
                   help="frames per second sampled by qwen-omni-utils (default its 2.0)")
    p.add_argument("--min-pixels", type=positive_int,
                   help="qwen-omni-utils: least pixels per frame (default 128 x 28 x 28)")
    p.add_argument("--max-pixels", type=positive_int,
                   help="qwen-omni-utils: most pixels per frame (default 768 x 28 x 28)")
    p.add_argument("--total-pixels", type=positive_int,
                   help="qwen-omni-utils: most pixels per video, all frames together")
    p.add_argument("--no-generate", dest="generate", action="store_false",
                   help="skip the greedy JSON answers (secondary scoring)")
    p.add_argument("--max-new-tokens", type=positive_int, default=16,
                   help="length limit of generated answers (default 16)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="suffix rows per forward pass on the cached prefix (default 64)")
    p.add_argument("--processor-kwargs", type=json_object,
                   help='JSON passed to the processor, e.g. \'{"videos_kwargs": {"size": ...}}\'')
    p.add_argument("--include-known-bad", action="store_true",
                   help="do not skip the CREMA-D clips known to be broken")
    add_seed(p, "seed of the bootstrap (default 0)")
    p.add_argument("--n-boot", type=positive_int, default=1000,
                   help="bootstrap resamples of the actors (1000)")
    p.add_argument("--n-perm", type=positive_int, default=1000,
                   help="permutations of the claim test (1000)")
    p.add_argument("--min-share", type=unit_float, default=0.10,
                   help="prune error-graph edges below this share of the source label's errors "
                        "(default 0.10)")
    p.add_argument("--revision", help="model revision (hub ids)")
    p.add_argument("--allow-download", action="store_true",
                   help="let transformers download a hub id that is not cached")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    p.add_argument("--device", default="cpu", help="torch device, or 'auto' to spread over GPUs")
    add_intervene_option(p)


def _check_args(args) -> None:
    if not args.model:
        raise ValueError("--model: required with --data or --manifest (the run needs a model; "
                         "--from-table needs none)")
    if args.data and not os.path.isdir(args.data):
        raise ValueError(f"--data: folder {args.data!r} does not exist")
    if args.manifest and not os.path.isfile(args.manifest):
        raise ValueError(f"--manifest: file {args.manifest!r} does not exist")
    m = args.model
    if not os.path.isdir(m) and (os.path.isabs(m) or m.startswith((".", "~")) or m.count("/") > 1
                                 or os.path.exists(m)):
        raise ValueError(f"--model: path {args.model!r} does not exist")
    if (os.path.isfile(os.path.join(args.out, "predictions.csv"))
            and not (args.resume or args.force or args.plan)):
        raise ValueError(f"--out: {args.out} already holds predictions.csv; pass --resume to "
                         f"continue it or choose another folder")


def preprocessing(args, adapter):
    """The `Preprocessing` of the model and the media options."""
    from mllm_probe.emotion.preprocess import for_adapter

    return for_adapter(adapter, args.preprocessing, fps=args.fps, num_frames=args.num_frames,
                       min_pixels=args.min_pixels, max_pixels=args.max_pixels,
                       total_pixels=args.total_pixels)


def plan(args, dataset) -> int:
    """``--plan``: print the plan of the run (no weights loaded, nothing written)."""
    from mllm_probe.emotion.plan import make_plan, render_plan
    from xmodal.commands.probe import load_model

    adapter = load_model(args, weights=False)
    result = make_plan(adapter, dataset, preprocessing(args, adapter), tuple(args.conditions),
                       dtype=args.dtype, batch_size=args.batch_size, generate=args.generate,
                       max_new_tokens=args.max_new_tokens, processor_kwargs=args.processor_kwargs,
                       limit=args.limit)
    print(render_plan(result), end="")
    return 0


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from None
    return value if isinstance(value, dict) else {}


def from_table(args) -> int:
    """``--from-table``: the analysis of an existing predictions table (checked before anything
    is written; skipped.csv and predictions.meta.json beside it are read when present)."""
    from mllm_probe.emotion.attractors import from_rows
    from mllm_probe.emotion.table import META_SUFFIX, read_table
    from xmodal.report import hold_lock, prepare_out, versions

    path = Path(args.from_table)
    if not path.is_file():
        raise ValueError(f"--from-table: file {str(path)!r} does not exist")
    rows = read_table(path)
    if not rows:
        raise ValueError(f"{path}: no prediction rows")
    for line, r in enumerate(rows, start=2):
        if r["condition"] not in CONDITIONS:
            raise ValueError(f"{path} line {line}, field 'condition': unknown condition "
                             f"{r['condition']!r} (expected one of {', '.join(CONDITIONS)})")
    from_rows(rows, source=str(path))  # every value checked before anything is written
    meta_path = path.with_name(path.stem + META_SUFFIX)
    meta = _read_json(meta_path) if meta_path.is_file() else {}
    skipped = []
    if (path.parent / "skipped.csv").is_file():
        with open(path.parent / "skipped.csv", newline="", encoding="utf-8") as f:
            skipped = [{"clip": r.get("clip", ""), "reason": r.get("reason", ""),
                        "path": r.get("path") or None} for r in csv.DictReader(f)]
    out = prepare_out(Path(args.out), force=args.force)
    hold_lock(out)
    units = len({(r["clip"], r["condition"]) for r in rows})
    order = meta.get("conditions") or CONDITIONS  # the run's order, for the same summary
    conditions = [c for c in order if c in args.conditions]
    summary = write_analysis(out, rows, conditions, seed=args.seed, n_boot=args.n_boot,
                             n_perm=args.n_perm, min_share=args.min_share,
                             run_info={"source_table": str(path.resolve()),
                                       "model": {"id": meta.get("model", "unknown")},
                                       "data": meta.get("data", "unknown"), "config": meta,
                                       "units": units, "units_run": 0, "units_resumed": units,
                                       "skipped": skipped, "versions": versions()})
    print(f"wrote {out}: analysis of {summary['rows']} prediction rows from {path}; claim "
          f"(Face+Voice errors track Face-only): {summary['primary']['claim']['verdict']}")
    return 0


def run(args) -> int:
    from xmodal.report import atomic_write_bytes, hold_lock, prepare_out

    if args.from_table:
        return from_table(args)
    _check_args(args)
    from mllm_probe.emotion.datasets import read_cremad, read_manifest

    dataset = (read_cremad(args.data, include_known_bad=args.include_known_bad) if args.data
               else read_manifest(args.manifest))
    if args.plan:
        return plan(args, dataset)
    out = prepare_out(Path(args.out), force=args.force, resume=args.resume)
    hold_lock(out)
    if args.force and not args.resume:  # start over: the table of the old run goes
        for name in ("predictions.csv", "predictions.meta.json"):
            (out / name).unlink(missing_ok=True)

    from mllm_probe.emotion import experiment
    from mllm_probe.intervention import intervening
    from xmodal.commands.probe import check_interventions, load_model

    adapter = load_model(args)
    check_interventions(args, adapter)
    config = experiment.RunConfig(interventions=tuple(args.intervene),
                                  conditions=tuple(args.conditions),
                                  preprocessing=preprocessing(args, adapter),
                                  generate=args.generate, max_new_tokens=args.max_new_tokens,
                                  batch_size=args.batch_size, bundles=args.bundles,
                                  processor_kwargs=args.processor_kwargs)
    with intervening(adapter, config.interventions):
        result = experiment.run(adapter, dataset, out, config, resume=args.resume, limit=args.limit)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["clip", "reason", "path"])
    for s in result["skipped"]:
        writer.writerow([s.id, s.reason, s.path or ""])
    atomic_write_bytes(out / "skipped.csv", buf.getvalue().encode())

    from mllm_probe.emotion.table import read_table
    from mllm_probe.probe import library_versions
    from xmodal.report import versions

    summary = write_analysis(out, read_table(out / "predictions.csv"), config.conditions,
                             seed=args.seed, n_boot=args.n_boot, n_perm=args.n_perm,
                             min_share=args.min_share,
                             run_info={"model": adapter.describe(), "data": dataset.source,
                                       "config": config.fingerprint(adapter, dataset),
                                       "units": result["units"], "units_run": result["done"],
                                       "units_resumed": result["resumed"],
                                       "skipped": [{"clip": s.id, "reason": s.reason,
                                                    "path": s.path} for s in result["skipped"]],
                                       "versions": {**versions(), **library_versions()}})
    claim = summary["primary"]["claim"]
    print(f"wrote {out}: {summary['rows']} prediction rows, {len(result['skipped'])} clips "
          f"skipped; claim (Face+Voice errors track Face-only): {claim['verdict']}")
    return 0


def write_analysis(out: Path, rows: list[dict], conditions, *, seed: int, n_boot: int,
                   n_perm: int, min_share: float, run_info: dict) -> dict:
    """Analyse predictions-table ``rows``; write summary.json, the figures and report.md to
    ``out``. Needs numpy and matplotlib only."""
    from mllm_probe.emotion import attractors, figures
    from mllm_probe.emotion.tokens import distribution
    from xmodal.report import atomic_savefig, atomic_write_bytes, atomic_write_json

    present = [c for c in conditions if any(r["condition"] == c for r in rows)]
    options = {"seed": seed, "n_boot": n_boot, "n_perm": n_perm, "min_share": min_share}
    primary = attractors.analyze(attractors.from_rows(rows), present, **options)
    generated = attractors.analyze(attractors.from_rows(rows, "generated_label"), present,
                                   **options)
    parse = {c: {} for c in present}
    for r in rows:
        if r["condition"] in parse:
            parse[r["condition"]][r["parse_status"]] = parse[r["condition"]].get(
                r["parse_status"], 0) + 1
    for c in present:
        n = sum(parse[c].values())
        ok = sum(1 for r in rows if r["condition"] == c and r["generated_label"] == r["intended"])
        generated["per_condition"][c]["accuracy"]["intended_over_all_rows"] = ok / n if n else None
    summary = {"rows": len(rows), "clips": len({r["clip"] for r in rows}), **run_info,
               "tokens": distribution(rows, present),
               "primary": primary, "generated": generated, "parse_status": parse}
    atomic_write_json(out / "summary.json", _jsonable(summary))
    for name, make in figures.FIGURES.items():
        fig = make(primary)
        atomic_savefig(fig, out / name)
    atomic_write_bytes(out / "report.md", render_report(summary).encode())
    return summary


def _jsonable(obj):
    import math

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _missing(x) -> bool:
    import math

    return x is None or math.isnan(x)


def _pct(x) -> str:
    return "n/a" if _missing(x) else f"{100 * x:.1f} %"


def _num(x) -> str:
    return "n/a" if _missing(x) else f"{x:.3f}"


def claim_section(p: dict) -> list[str]:
    """Report lines of the claim test: the three analyses, their verdicts and agreements."""
    st, an = p["settings"], p["analyses"]
    lines = ["## Claim test: Face+Voice errors track Face-only, not Voice-only", "",
             ("Three analyses kept apart: the unperturbed prompt (variant 0; **primary**), the "
              "perturbed prompts that allow the intended label (misperceptions) and those that "
              "forbid it (forced fallbacks). Statistic: delta = JSD(face_voice, voice_only) - "
              "JSD(face_voice, face_only), Jensen-Shannon divergences (bits) of the error "
              "targets (the predicted labels of the errors); delta > 0 says Face+Voice errors "
              "look more like Face-only's. "
              f"Null: within each clip and variant the labels of the conditions that erred are "
              f"exchangeable (one common error process; each condition keeps its error count), "
              f"{st['n_perm']} permutations. Verdict at alpha = {st['alpha']} (two-sided p, "
              f"the direction from the one-sided p); the two secondary analyses are "
              f"Holm-corrected together. Excess = delta minus its null mean (the plug-in bias), "
              f"with a {st['level']:.0%} interval over {p['actors']} actors resampled "
              f"({st['n_boot']} resamples)."), "",
             "| analysis | cells | errors fv / fo / vo | delta | null mean | excess [interval] | "
             "p | p adjusted | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for name, a in an.items():
        c = a["claim"]
        if "p_value" not in c:
            lines.append(f"| {name} | {c.get('cells', 0)} | "
                         + " / ".join(str(v) for v in c.get("errors", {}).values())
                         + f" | | | | | | **{c['verdict']}** ({c['reason']}) |")
            continue
        lines.append(f"| {name} | {c['cells']} | " + " / ".join(map(str, c["errors"].values()))
                     + f" | {_num(c['delta'])} | {_num(c['null_mean'])} | {_num(c['excess'])} "
                     f"[{_num(c['excess_low'])}, {_num(c['excess_high'])}] | {c['p_value']:.4f} "
                     f"| {c['p_adjusted']:.4f} | **{c['verdict']}** |")
    lines += ["", ("Paired agreement on the same clip and variant: P(fv = fo) - P(fv = vo), "
                   "over all cells and over the cells where Face+Voice errs, with intervals over "
                   "actors:"), "", "| analysis | P(fv = fo) | P(fv = vo) | difference [interval] "
              "| among Face+Voice errors |", "|---|---|---|---|---|"]
    for name, a in an.items():
        g = a["agreement"]
        if "all" not in g:
            lines.append(f"| {name} | | | not testable ({g['reason']}) | |")
            continue
        x, e = g["all"], g["face_voice_errors"]
        lines.append(f"| {name} | {_num(x['p_fv_fo'])} | {_num(x['p_fv_vo'])} | "
                     f"{_num(x['difference'])} [{_num(x['low'])}, {_num(x['high'])}] | "
                     f"{_num(e['difference'])} [{_num(e['low'])}, {_num(e['high'])}] |")
    cl = p["claim"]
    lines += ["", f"**Primary verdict (unperturbed prompt): {cl['verdict']}**"
              + (f" ({cl['reason']})." if cl["verdict"] == "not testable" else
                 f" (p = {cl['p_value']:.4f}; p_supported = {cl['p_supported']:.4f}, "
                 f"p_contradicted = {cl['p_contradicted']:.4f}). \"supported\" and "
                 f"\"contradicted\" reject the null of one common error process; \"no "
                 f"detectable effect\" does not show that the conditions agree.")]
    return lines


def render_report(s: dict) -> str:
    """report.md: setup, skipped clips, accuracy, attractors, figures and the claim test."""
    p = s["primary"]
    conds = p["conditions"]
    model = s["model"]
    source = (f"re-analysed from the table `{s['source_table']}`" if "source_table" in s else
              f"{s['units_run']} clip-condition units run now, {s['units_resumed']} resumed")
    lines = ["# Emotion experiment", "",
             f"Model `{model['id']}`" + (f" ({model['architecture']})" if "architecture" in model
                                         else "") + f", data `{s['data']}`.",
             (f"{s['clips']} clips ({p['actors']} actors) x {len(conds)} conditions x 57 prompt "
              f"variants = {s['rows']} prediction rows ({source}). Primary prediction: argmax of "
              f"the allowed labels' answer log-probabilities; secondary: the greedy JSON answer."),
             ""]
    if s["skipped"]:
        lines += [f"## Skipped clips ({len(s['skipped'])})", "", "| clip | reason |", "|---|---|"]
        lines += [f"| {k['clip']} | {k['reason']} |" for k in s["skipped"]] + [""]
    from mllm_probe.emotion.tokens import markdown

    lines += ["## Tokens per modality", "",
              ("Positions of each modality in the media prefix (mean [min, max] over the clips; "
               "whole prompt: the unperturbed prompt). Attention shares are to be read against "
               "these counts: modality dominance can be token dominance."), "",
              *markdown(s["tokens"]), ""]
    lines += ["## Accuracy", "",
              ("| condition | intended (all 57) | unperturbed prompt | prompts allowing the "
              "intended label | perceived (votes of the condition) | generated JSON | "
              "parse failures |"), "|---|---|---|---|---|---|---|"]
    for c in conds:
        a = p["per_condition"][c]["accuracy"]
        g = s["generated"]["per_condition"][c]["accuracy"].get("intended_over_all_rows")
        ps = s["parse_status"][c]
        fails = sum(v for k, v in ps.items() if k not in ("ok", "forbidden_label"))
        lines.append(f"| {c} | {_pct(a['intended'])} | {_pct(a['intended_unperturbed'])} | "
                     f"{_pct(a['intended_allowed'])} | {_pct(a['perceived'])} | {_pct(g)} | "
                     f"{fails} of {sum(ps.values())} |")
    lines += ["", "Generated JSON accuracy counts unparsed answers as wrong; parse statuses per "
              "condition: " + "; ".join(f"{c}: {s['parse_status'][c]}" for c in conds) + ".", "",
              "![confusion matrices](confusion.png)", "", "## Error attractors", "",
              "Share of all errors landing on each label:", "",
              "| condition | " + " | ".join(p["labels"]) + " |",
              "|---|" + "---|" * len(p["labels"])]
    for c in conds:
        st = p["per_condition"][c]["attractor_strength"]
        lines.append(f"| {c} | " + " | ".join(_num(st[x]) for x in p["labels"]) + " |")
    lines += ["", ("Attractor hierarchy (level k: where errors go when levels 1..k-1 are "
              "forbidden):"), ""]
    for c in conds:
        h = p["per_condition"][c]["hierarchy"]
        lines.append(f"- {c}: " + (" > ".join(f"{x['label']} ({_pct(x['share'])} of "
                                                f"{x['errors']} errors; rank kept in "
                                                f"{_pct(x['kept'])})" for x in h) or "no errors"))
    lines += ["", ("Rank kept: the share of actor resamples whose hierarchy has the same label "
                   "at that level.")]
    lines += ["", (f"Error graph (edges below {p['settings']['min_share']:.0%} of the source "
              f"label's errors pruned):"), "", "![error-attractor graph](attractor_graph.png)", "",
              "![alluvial plot of the errors](sankey.png)", "",
              *claim_section(p), "",
              ("Descriptive: {js}, between the conditions' error "
               "distributions over all 57 variants pooled, {lv:.0%} intervals over actors "
               "({nb} resamples, seed {seed}); plug-in distances are biased upward, more for "
               "the condition with fewer errors, so they carry no verdict:").format(
                  js=p["settings"]["js"], lv=p["settings"]["level"], nb=p["settings"]["n_boot"],
                  seed=p["settings"]["seed"]), "",
              "| pair | (intended, predicted) error cells | predicted label of errors |",
              "|---|---|---|"]
    for pair in p["js_distance"]["pairs"]:
        a, b = p["js_distance"]["pairs"][pair], p["js_distance"]["targets"][pair]
        lines.append(f"| {pair.replace('|', ' vs ')} | {_num(a['distance'])} "
                     f"[{_num(a['low'])}, {_num(a['high'])}] | {_num(b['distance'])} "
                     f"[{_num(b['low'])}, {_num(b['high'])}] |")
    lines += ["", "![JS distances](js_distance.png)", ""]
    lines += ["", ("These numbers describe this model and these clips only. A random-weight test "
              "model has no reason to show the paper's effect, and few clips give wide intervals."),
              ""]
    return "\n".join(lines)
