"""`python -m core`: each subcommand registers its parser and the handler that runs it.

The train flags are built from core.training.options.TrainOptions, so each default lives once.
Errors a user can fix (a missing checkpoint, a bad file or folder, an unknown method) print
one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from core.config import CheckpointError
from core.errors import DatasetError, EngineError
from core.evaluation_store import cache_dir
from core.explanation import METHODS, ExplainError, ExplainSettings
from core.image_input import PLANE_AXES, ImageInputError
from core.reliability import COMBINATIONS
from core.training.options import TrainOptions
from core.workers import SLOW_QUEUE_LIMIT

USER_ERRORS = (CheckpointError, DatasetError, EngineError, ExplainError, ImageInputError)
DEFAULT = "default"  # --method default: the method the checkpoint's config.json names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="Brain-MRI explainability: " + __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    registers = [_train, _soup, _explain, _evaluate, _compare, _sweep, _serve, _bench, _select, _calibrate, _card]
    for register in [*registers, _sanity, _stress, _reliability]:
        register(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except USER_ERRORS as error:
        print(error, file=sys.stderr)
        return 2


# --- options built from a dataclass -------------------------------------------------------


def add_dataclass_options(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of `cls` (see core.training.options.option): its type, default and
    help come from the field, so the command line never repeats a default."""
    hints = typing.get_type_hints(cls)
    for spec in fields(cls):
        kind, meta = hints[spec.name], spec.metadata
        flag = meta.get("flag") or "--" + spec.name.replace("_", "-")
        extra = dict(meta.get("cli", {}))
        if kind is bool:
            action = "store_false" if spec.default else "store_true"
            parser.add_argument(flag, dest=spec.name, action=action, help=meta.get("help"))
            continue
        if spec.default is MISSING:
            extra["required"] = True
        else:
            extra["default"] = spec.default
        if typing.get_origin(kind) is tuple:
            extra["nargs"] = "+"
            kind = typing.get_args(kind)[0]
        elif isinstance(kind, types.UnionType):
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        parser.add_argument(flag, dest=spec.name, type=kind, help=meta.get("help"), **extra)


def dataclass_from_args(cls, args: argparse.Namespace):
    return cls(**{spec.name: getattr(args, spec.name) for spec in fields(cls)})


# --- explanation settings shared by explain, evaluate and compare ----------------------------


def _add_explain_options(parser: argparse.ArgumentParser, method_default: str | None = DEFAULT) -> None:
    parser.add_argument(
        "--method", default=method_default, help=f"'{DEFAULT}' (the checkpoint's) or one of: {', '.join(METHODS)}"
    )
    parser.add_argument(
        "--layer", help="target layer, a dotted module name or several joined by '+' (default: the checkpoint's)"
    )
    parser.add_argument("--no-brain-mask", action="store_true", help="no masking of input or heatmap")


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    engines = "local: this process; ray: a pool of Ray actors (one model and torch thread each)"
    parser.add_argument("--engine", choices=("local", "ray"), default="local", help=engines)
    parser.add_argument("--address", help="with --engine ray: the cluster to join (default: start one here)")
    parser.add_argument("--workers", type=int, help="with --engine ray: actors in the pool (default: every CPU)")


def _engine_options(args: argparse.Namespace) -> dict:
    return {"engine": args.engine, "address": args.address, "workers": args.workers}


def _explain_settings(args: argparse.Namespace) -> ExplainSettings:
    mask = not args.no_brain_mask
    method = None if args.method in (None, DEFAULT) else args.method
    return ExplainSettings(method, getattr(args, "target", None), args.layer, mask, mask)


# --- the commands ---------------------------------------------------------------------------


def _train(commands) -> None:
    parser = commands.add_parser("train", help="train a classifier and write a checkpoint")
    add_dataclass_options(parser, TrainOptions)
    parser.add_argument(
        "--folds", type=int, help="grouped k-fold cross-validation of this recipe instead: --out is a JSON report"
    )
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from core.training.loop import cross_validate, train

    try:
        options = dataclass_from_args(TrainOptions, args)
        cross_validate(options, args.folds) if args.folds else train(options)
    except ValueError as error:  # options that do not fit together, too many folds
        print(error, file=sys.stderr)
        return 2
    return 0


def _soup(commands) -> None:
    parser = commands.add_parser(
        "soup", help="average the weights of runs from one start (model soup); temperature fitted on the hold-out"
    )
    parser.add_argument("out", type=Path, help="checkpoint folder to write")
    parser.add_argument("sources", nargs="+", help="two or more checkpoints (names or folders) from the same start")
    parser.add_argument("--start", help="the checkpoint the sources were fine-tuned from, to move back toward")
    parser.add_argument(
        "--start-share", type=float, default=0.0, help="how far back toward --start, from 0 to below 1 (WiSE-FT)"
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset ROOT the sources were trained on")
    parser.add_argument("--holdout-fraction", type=float, default=0.15, help="the hold-out every source kept aside")
    parser.add_argument("--holdout-seed", type=int, default=0, help="its seed (as in train)")
    parser.set_defaults(run=_run_soup)


def _run_soup(args: argparse.Namespace) -> int:
    from core.training.soup import make_soup

    metrics = make_soup(
        args.sources, args.out, args.data, args.holdout_fraction, args.holdout_seed, args.start, args.start_share
    )
    print(f"saved {args.out}: grouped hold-out accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
          f"ECE after temperature {metrics['ece_after_temperature']:.3f} ({metrics['num_images']} images)")  # fmt: skip
    return 0


def _explain(commands) -> None:
    parser = commands.add_parser("explain", help="heatmaps and overlays for image files")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--checkpoint", required=True, help="name under checkpoints/ or a folder")
    parser.add_argument("--target", help="class name to explain (default: predicted)")
    _add_explain_options(parser)
    parser.add_argument("--out", type=Path, required=True)
    every = "score every slice of each volume (a row each) and explain the most suspicious ones"
    parser.add_argument("--all-slices", action="store_true", help=every)
    parser.add_argument("--top", type=int, default=3, help="with --all-slices: slices per volume given PNGs")
    parser.add_argument("--report", action="store_true", help="also write report.pdf: a case report page per scan")
    parser.add_argument(
        "--plane", choices=list(PLANE_AXES), default="axial", help="the plane NIfTI volumes are sliced in"
    )
    _add_engine_options(parser)
    parser.set_defaults(run=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    from core.batch import explain_files, explain_volumes

    if (args.all_slices or args.report) and args.engine != "local":
        print("--all-slices and --report run on the local engine; leave out --engine ray.", file=sys.stderr)
        return 2
    if args.all_slices:
        volumes = explain_volumes(args.images, args.checkpoint, args.out, _explain_settings(args), top=args.top,
                                  report=args.report, axis=PLANE_AXES[args.plane])  # fmt: skip
        failed = sum("error" in v for v in volumes)
        slices = sum(v.get("num_slices", 0) for v in volumes)
        print(f"{slices} slices of {len(volumes) - failed} of {len(volumes)} volumes scored; "
              f"results in {args.out / 'summary.csv'}")  # fmt: skip
        return 1 if failed else 0
    results = explain_files(args.images, args.checkpoint, args.out, _explain_settings(args), report=args.report,
                            axis=PLANE_AXES[args.plane], **_engine_options(args))  # fmt: skip
    failed = sum("error" in r for r in results)
    print(f"{len(results) - failed} of {len(results)} images explained; results in {args.out / 'results.json'}")
    return 1 if failed else 0


def _evaluate(commands) -> None:
    parser = commands.add_parser("evaluate", help="accuracy, F1, AUC and calibration on a split")
    parser.add_argument("--checkpoint", required=True, help="name under checkpoints/ or a folder")
    parser.add_argument("--data", type=Path, required=True, help="dataset ROOT with SPLIT/<class>/<image>")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, required=True)
    _add_explain_options(parser, method_default=None)
    parser.add_argument("--threshold", type=float, default=0.5, help="relative heatmap threshold for IoU")
    parser.add_argument("--cache", action="store_true", help="reuse/store the result in the gallery's disk cache")
    parser.add_argument("--per-class", type=int, help="a seeded random sample of N images per class (not with --cache)")
    parser.add_argument(
        "--faithfulness", action="store_true", help="with --method: deletion/insertion AUC per image (~1 s each)"
    )
    _add_engine_options(parser)
    parser.epilog = (
        "With --method (e.g. 'default'), every image also gets a heatmap and localisation metrics against its outline."
    )
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from core.evaluate import cached_evaluation, evaluate

    settings, heatmaps = _explain_settings(args), args.method is not None
    options = {"settings": settings, "heatmaps": heatmaps, "threshold": args.threshold}
    if args.faithfulness and not heatmaps:
        print("--faithfulness checks heatmaps: add --method (e.g. --method default).", file=sys.stderr)
        return 2
    if args.cache and args.per_class:
        print("--per-class samples the split; the cache holds whole splits only: drop --cache.", file=sys.stderr)
        return 2
    if args.cache:
        folder = cached_evaluation(args.checkpoint, args.data, args.split, cache_dir(), **options,
                                   **_engine_options(args))  # fmt: skip
        shutil.copytree(folder, args.out, dirs_exist_ok=True)
        summary = json.loads((args.out / "summary.json").read_text())
    else:
        summary = evaluate(args.checkpoint, args.data, args.split, args.out, faithfulness=args.faithfulness,
                           per_class=args.per_class, **options, **_engine_options(args))  # fmt: skip
    ece = summary["ece_15_bins"]
    print(
        f"{summary['num_images']} images: accuracy {summary['accuracy']:.3f}, macro-F1 {summary['macro_f1']:.3f}, "
        f"ECE {ece['before_temperature']:.3f} -> {ece['after_temperature']:.3f} after temperature; "
        f"{summary['images_per_second']} images/s; written to {args.out}"
    )
    if "localisation" in summary:
        overall = summary["localisation"]["all"]
        print("localisation: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in overall.items() if v["mean"] is not None))
    if "faithfulness" in summary:
        print("faithfulness: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in summary["faithfulness"].items()))
    return 0


def _compare(commands) -> None:
    parser = commands.add_parser("compare", help="two models on one image: figure and agreement JSON")
    parser.add_argument("image", type=Path)
    parser.add_argument("--checkpoints", nargs=2, required=True, metavar=("A", "B"))
    _add_explain_options(parser)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--out", type=Path, required=True)
    parser.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from core.checkpoint import load_checkpoint
    from core.compare import heatmap_agreement, side_by_side, verdict
    from core.explain import explain
    from core.image_input import load_image
    from core.render import png_bytes

    try:
        data = args.image.read_bytes()
    except OSError as error:
        print(f"{args.image}: {error.strerror}", file=sys.stderr)
        return 2
    loaded = load_image(data, args.image.name)
    models = [load_checkpoint(name) for name in args.checkpoints]
    settings = _explain_settings(args)
    results = [explain(model, loaded.pixels, settings) for model in models]
    names = (models[0].name, models[1].name)
    records = {model.name: model.config.metrics.get("accuracy") for model in models}
    together = verdict(names, *results, records)
    agreement = heatmap_agreement(results[0].heatmap, results[1].heatmap, args.threshold, loaded.pixel_spacing_mm)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.png").write_bytes(png_bytes(side_by_side(loaded.pixels, list(zip(names, results)))))
    report = {
        "image": str(args.image),
        "models": {name: result.summary() for name, result in zip(names, results)},
        "same_prediction": results[0].predicted_label == results[1].predicted_label,
        "verdict": together.kind,
        "sentence": together.sentence,
        "threshold": args.threshold,
        "agreement": agreement.to_dict(),
    }
    (args.out / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    print(together.sentence)
    return 0


def _sweep(commands) -> None:
    parser = commands.add_parser(
        "sweep", help="every CAM method x layer, and Integrated Gradients, against trivial baselines; sets the default"
    )
    parser.add_argument("--checkpoint", required=True, help="name under checkpoints/ or a folder")
    parser.add_argument("--data", type=Path, required=True, help="dataset ROOT with SPLIT/<class>/<image>")
    parser.add_argument("--split", default="val", help="choose on val (or training splits); report on test")
    holdout = "instead of --split: the grouped hold-out of train+val, whose outlines outline guidance never saw"
    parser.add_argument("--holdout", action="store_true", help=holdout)
    parser.add_argument("--layers", nargs="+", help="candidate layers (default: each stage or block output)")
    parser.add_argument("--limit", type=int, help="at most this many outlined tumours, drawn at random (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the report as JSON")
    parser.add_argument("--apply", action="store_true", help="write the winner into config.json as the default")
    parser.set_defaults(run=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    from core.explanation import heatmap_name
    from core.sweep import HOLDOUT, apply_winner, print_report, sweep, write_report

    try:
        split = HOLDOUT if args.holdout else args.split
        report = sweep(args.checkpoint, args.data, split, layers=tuple(args.layers or ()) or None,
                       limit=args.limit, seed=args.seed)  # fmt: skip
    except ValueError as error:  # no outlined tumour, no candidate layers
        print(error, file=sys.stderr)
        return 2
    print_report(report)
    if args.out:
        write_report(report, args.out)
    if args.apply:
        if report["winner"] is None:
            print("No candidate met the rule; config.json is unchanged.", file=sys.stderr)
            return 1
        apply_winner(args.checkpoint, report)
        winner = report["winner"]
        print(f"{args.checkpoint}: default heatmap is now {heatmap_name(winner['method'], winner['layer'])}")
    return 0


def _serve(commands) -> None:
    parser = commands.add_parser("serve", help="HTTP API (FastAPI): POST /predict, GET /models, /health")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one model replica and thread each)")
    parser.add_argument("--queue", type=int, default=8, help="requests that may wait before the API answers 503")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds before a request is stopped (504)")
    slow = f"worker processes for Score-CAM and the noise tunnel, at a lower CPU priority ({SLOW_QUEUE_LIMIT} more "
    parser.add_argument("--slow-workers", type=int, default=1, help=slow + "of their requests may wait)")
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from core.service import create_app

    if args.workers < 1 or args.slow_workers < 1 or args.queue < 0 or args.time_limit <= 0:
        raise SystemExit(
            "--workers and --slow-workers must be at least 1, --queue at least 0 and --time-limit positive."
        )
    app = create_app(
        workers=args.workers, queue_limit=args.queue, time_limit_s=args.time_limit, slow_workers=args.slow_workers
    )
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


def _bench(commands) -> None:
    parser = commands.add_parser("bench", help="latency, re-render, throughput and cold start (prints ratios)")
    parser.add_argument("--checkpoints", nargs="*", help="default: every installed checkpoint")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    engines = "instead: explain FOLDER locally and on Ray with 1 and 2 actors (the first checkpoint)"
    parser.add_argument("--engines", type=Path, metavar="FOLDER", help=engines)
    parser.add_argument("--limit", type=int, help="with --engines: the first N files only")
    service = "instead: the HTTP API under load (latency with a Score-CAM running, 2 vs 1 workers, memory)"
    parser.add_argument("--service", action="store_true", help=service)
    parser.add_argument("--requests", type=int, default=1000, help="with --service: requests for the memory check")
    parser.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from core.bench import bench_engines, run_bench

    checkpoint = (args.checkpoints or ["efficientnet_lite0"])[0]
    if args.service:
        from core.load_bench import bench_service

        bench_service(checkpoint, max(args.requests, 200), args.out)
    elif args.engines:
        bench_engines(checkpoint, args.engines, args.out, args.limit)
    else:
        run_bench(args.checkpoints, args.repeats, args.batch, args.out)
    return 0


def _select(commands) -> None:
    parser = commands.add_parser(
        "select", help="candidates against a reference checkpoint on the grouped hold-out (never test)"
    )
    parser.add_argument("checkpoints", nargs="+", help="the reference first, then the candidates")
    parser.add_argument("--data", type=Path, required=True, help="dataset ROOT with SPLIT/<class>/<image>")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="the splits trained on")
    parser.add_argument("--holdout-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0, help="the training seed that drew the hold-out")
    parser.add_argument("--placement-split", help="also compare Grad-CAM placement on this split's outlines (val)")
    parser.add_argument("--out", type=Path, help="also write the comparison as JSON")
    parser.set_defaults(run=_run_select)


def _run_select(args: argparse.Namespace) -> int:
    from core.selection import compare_checkpoints

    comparisons = compare_checkpoints(
        args.checkpoints, args.data, splits=tuple(args.splits), fraction=args.holdout_fraction,
        seed=args.seed, placement_split=args.placement_split,
    )  # fmt: skip
    for c in comparisons:
        line = (
            f"{c.checkpoint}: hold-out {c.holdout_images} images, accuracy {c.accuracy:.3f}, "
            f"macro-F1 {c.macro_f1:.3f}, ECE after temperature {c.ece_after_temperature:.3f}"
        )
        if c.mcnemar:
            m = c.mcnemar
            line += f"; right only here {m.better}, only for the reference {m.worse}, exact McNemar p = {m.p_value:.3g}"
        print(line)
        for column, mean in (c.placement or {}).items():
            t = (c.placement_tests or {}).get(column)
            versus = f" (better on {t.better}, worse on {t.worse}; Wilcoxon p = {t.p_value:.3g})" if t else ""
            print(f"    Grad-CAM on {args.placement_split}: {column} {mean:.3f}{versus}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([c.to_dict() for c in comparisons], indent=2) + "\n")
    return 0


def _calibrate(commands) -> None:
    parser = commands.add_parser(
        "calibrate", help="give a run refit without a hold-out the temperature its hold-out twin fitted"
    )
    parser.add_argument("--checkpoint", required=True, help="the checkpoint whose temperature to set")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--temperature-from", help="(a run refit with --holdout-fraction 0) its twin with the hold-out")
    shifted = "stress.json of `stress --holdout`: adopt the shift-fitted temperature if it is better"
    source.add_argument("--under-shift", type=Path, metavar="STRESS_JSON", help=shifted)
    parser.set_defaults(run=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    from core.training.calibrate import adopt_shift_temperature, adopt_temperature

    if args.under_shift:
        adopted = adopt_shift_temperature(args.checkpoint, json.loads(args.under_shift.read_text()))
        kept = "temperature kept (the shift-fitted one is not better on unseen shifts)"
        print(f"{args.checkpoint}: {kept if adopted is None else f'temperature {adopted:.3f}, fitted with shifts'}")
        return 0
    temperature = adopt_temperature(args.checkpoint, args.temperature_from)
    print(f"{args.checkpoint}: temperature {temperature:.3f}, fitted on {args.temperature_from}'s hold-out")
    return 0


def _card(commands) -> None:
    parser = commands.add_parser("card", help="write a checkpoint's model card from evaluation summaries")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--test", type=Path, required=True, help="summary.json of the test evaluation")
    parser.add_argument("--localisation", type=Path, nargs="*", default=[], help="summary.json files with heatmaps")
    parser.add_argument("--commit", required=True, help="commit that produced the measurements")
    parser.add_argument("--stress", type=Path, help="stress.json of the stress test on the same split")
    parser.add_argument("--faithfulness", type=Path, help="summary.json of `evaluate --faithfulness`")
    parser.add_argument("--sanity", type=Path, help="sanity.json of `python -m core sanity`")
    parser.set_defaults(run=_run_card)


def _run_card(args: argparse.Namespace) -> int:
    from core.model_card import write_model_card

    summaries = [json.loads(p.read_text()) for p in args.localisation]
    stress, faithfulness, sanity = (json.loads(p.read_text()) if p else None for p in (args.stress, args.faithfulness,
                                                                                        args.sanity))  # fmt: skip
    print(write_model_card(args.checkpoint, json.loads(args.test.read_text()), summaries, args.commit, stress,
                           faithfulness, sanity))  # fmt: skip
    return 0


def _sanity(commands) -> None:
    parser = commands.add_parser("sanity", help="the randomisation check of every fast method on outlined tumours")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=8, help="the first N outlined tumour images of the split")
    parser.add_argument("--out", type=Path, required=True, help="a JSON file")
    parser.set_defaults(run=_run_sanity)


def _run_sanity(args: argparse.Namespace) -> int:
    from core.checkpoint import load_checkpoint
    from core.sanity import sanity_table
    from core.training.record import git_commit

    loaded = load_checkpoint(args.checkpoint)
    rows = sanity_table(loaded, args.data, args.split, images=args.images)
    report = {"checkpoint": args.checkpoint, "split": args.split, "images": args.images, "commit": git_commit(),
              "layer": loaded.config.default_target_layer, "methods": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in rows:
        print(f"{row['method']}: rank correlation {row['rank correlation, all randomised']:.2f}, "
              f"{'passes' if row['passes'] else 'fails'}")  # fmt: skip
    return 0


def _stress(commands) -> None:
    parser = commands.add_parser("stress", help="accuracy under scanner/protocol shifts, and occlusion sensitivity")
    parser.add_argument("--checkpoint", required=True, help="name under checkpoints/ or a folder")
    parser.add_argument("--data", type=Path, required=True, help="dataset ROOT with SPLIT/<class>/<image>")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--split", help="a split to report on (test: only after choosing)")
    where.add_argument("--holdout", action="store_true", help="the grouped hold-out of train+val, to choose on")
    parser.add_argument("--limit", type=int, help="at most this many images per class, drawn at random (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write stress.json and stress.csv here")
    parser.set_defaults(run=_run_stress)


def _run_stress(args: argparse.Namespace) -> int:
    from core.stress import print_report, stress_test, write_report

    try:
        report = stress_test(args.checkpoint, args.data, args.split, holdout=args.holdout, limit=args.limit,
                             seed=args.seed, progress=sys.stderr.isatty())  # fmt: skip
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    print_report(report)
    if args.out:
        write_report(report, args.out)
        print(f"wrote {args.out / 'stress.json'} and stress.csv")
    return 0


def _reliability(commands) -> None:
    parser = commands.add_parser(
        "reliability", help="fit familiarity and the near-tie margin; saved beside the weights"
    )
    parser.add_argument("--checkpoint", required=True, help="name under checkpoints/ or a folder")
    parser.add_argument("--data", type=Path, required=True, help="dataset ROOT with train/ and val/")
    parser.add_argument("--seed", type=int, default=0, help="seed of the grouped hold-out (as in train)")
    parser.add_argument("--no-texture", action="store_true", help="measure familiarity on the model's features alone")
    parser.add_argument("--no-flatness", action="store_true", help="no flat or linear shares, nor tilt, in texture")
    parser.add_argument("--no-linear", action="store_true", help="no linear share, nor tilt, in the texture block")
    parser.add_argument("--no-tilt", action="store_true", help="no intensity tilt in the texture block")
    twin = "(weights refit with --holdout-fraction 0) their twin, whose margin they take"
    parser.add_argument("--margin-from", metavar="TWIN", help=twin)
    parser.add_argument(
        "--combine", choices=COMBINATIONS, default=COMBINATIONS[0],
        help="how the feature blocks' scaled distances make one: added in quadrature, or the largest",
    )  # fmt: skip
    parser.set_defaults(run=_run_reliability)


def _run_reliability(args: argparse.Namespace) -> int:
    from core.config import resolve_checkpoint
    from core.reliability import fit_checkpoint, save

    fitted = fit_checkpoint(
        args.checkpoint, args.data, args.seed, sys.stderr.isatty(),
        texture=not args.no_texture, combine=args.combine, flatness=not args.no_flatness, linear=not args.no_linear,
        tilt=not args.no_tilt, margin_from=args.margin_from,
    )  # fmt: skip
    path = save(fitted, resolve_checkpoint(args.checkpoint))
    info = fitted.info
    print(f"wrote {path}: unfamiliar beyond distance {fitted.threshold:.1f} (95th percentile of the hold-out); "
          f"uncertain below a lead of {fitted.margin:.2f}, keeping {info['coverage']:.0%} of the hold-out "
          f"at selective accuracy {info['selective_accuracy']}"
          + (f" (the margin of {args.margin_from}, on its hold-out)" if args.margin_from else ""))  # fmt: skip
    return 0
