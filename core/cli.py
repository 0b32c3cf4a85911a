"""Argument parsing for `python -m core`; each command calls one core function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a classifier and write a checkpoint")
    train.add_argument("--arch", required=True, help="timm architecture, e.g. convnext_atto")
    train.add_argument("--data", type=Path, required=True, help="dataset ROOT with SPLIT/<class>/<image>")
    train.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    train.add_argument("--splits", nargs="+", default=["train", "val"])
    train.add_argument("--epochs", type=int, default=12)
    train.add_argument("--image-size", type=int, default=192)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--init",
        default="scratch",
        help="scratch, imagenet-lite0 (-lite1, -lite2), or a checkpoint folder of the same architecture to go on from",
    )
    train.add_argument("--teacher", type=Path, help="checkpoint to distil from")
    train.add_argument("--distill-weight", type=float, default=0.5, help="share of the loss given to the teacher")
    train.add_argument(
        "--consistent-teacher",
        action="store_true",
        help="the teacher scores each augmented view the student sees, not the un-augmented image once",
    )
    train.add_argument("--ema", type=float, metavar="DECAY", help="save an exponential moving average of the weights")
    train.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="blend image pairs (timm Mixup)")
    train.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA", help="paste a box from another image")
    train.add_argument(
        "--drop-path", type=float, default=0.0, metavar="RATE", help="stochastic depth while training (timm)"
    )
    train.add_argument(
        "--attention-transfer",
        type=float,
        default=0.0,
        metavar="BETA",
        help="pull the student's spatial attention towards the consistent teacher's (e.g. 1000)",
    )
    train.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.15,
        help="share of each class's groups held out (0: refit on every image; then set the temperature with calibrate)",
    )
    train.add_argument("--threads", type=int, default=2, help="CPU threads torch uses")
    train.add_argument("--limit", type=int, help="images per class (smoke runs)")
    train.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    train.add_argument(
        "--folds",
        type=int,
        help="grouped k-fold cross-validation of this recipe instead: --out is a JSON report, no checkpoint",
    )
    train.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where batches are trained")
    train.add_argument(
        "--bf16", action="store_true", help="forward passes in bfloat16 autocast (faster on CPUs with AVX512-BF16)"
    )
    train.add_argument("--no-progress", action="store_true")

    explain = commands.add_parser("explain", help="heatmaps and overlays for image files")
    explain.add_argument("images", nargs="+", type=Path)
    explain.add_argument("--checkpoint", required=True, help="name under checkpoints/ or a folder")
    explain.add_argument("--method", default="Grad-CAM")
    explain.add_argument("--target", help="class name to explain (default: predicted)")
    explain.add_argument("--no-brain-mask", action="store_true")
    explain.add_argument("--out", type=Path, required=True)

    evaluate = commands.add_parser("evaluate", help="accuracy, F1, AUC and calibration on a split")
    evaluate.add_argument("--checkpoint", required=True, help="name under checkpoints/ or a folder")
    evaluate.add_argument("--data", type=Path, required=True, help="dataset ROOT with SPLIT/<class>/<image>")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--out", type=Path, required=True)
    evaluate.add_argument("--no-brain-mask", action="store_true", help="no masking of input or heatmap")
    evaluate.add_argument("--method", help="also compute heatmaps with this CAM method, and localisation metrics")
    evaluate.add_argument("--threshold", type=float, default=0.5, help="relative heatmap threshold for IoU")
    evaluate.add_argument("--layer", help="target layer (default: the checkpoint's)")
    evaluate.add_argument("--cache", action="store_true", help="reuse/store the result in the gallery's disk cache")

    compare = commands.add_parser("compare", help="two models on one image: figure and agreement JSON")
    compare.add_argument("image", type=Path)
    compare.add_argument("--checkpoints", nargs=2, required=True, metavar=("A", "B"))
    compare.add_argument("--method", default="Grad-CAM")
    compare.add_argument("--threshold", type=float, default=0.5)
    compare.add_argument("--no-brain-mask", action="store_true")
    compare.add_argument("--out", type=Path, required=True)

    serve = commands.add_parser("serve", help="HTTP API (FastAPI): POST /predict, GET /models, /health")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    bench = commands.add_parser("bench", help="latency, re-render, throughput and cold start (prints ratios)")
    bench.add_argument("--checkpoints", nargs="*", help="default: every installed checkpoint")
    bench.add_argument("--repeats", type=int, default=20)
    bench.add_argument("--batch", type=int, default=16)
    bench.add_argument("--out", type=Path, default=Path("bench.json"))

    select = commands.add_parser(
        "select", help="candidates against a reference checkpoint on the grouped hold-out (never test)"
    )
    select.add_argument("checkpoints", nargs="+", help="the reference first, then the candidates")
    select.add_argument("--data", type=Path, required=True, help="dataset ROOT with SPLIT/<class>/<image>")
    select.add_argument("--splits", nargs="+", default=["train", "val"], help="the splits trained on")
    select.add_argument("--holdout-fraction", type=float, default=0.15)
    select.add_argument("--seed", type=int, default=0, help="the training seed that drew the hold-out")
    select.add_argument("--placement-split", help="also compare Grad-CAM placement on this split's outlines (val)")
    select.add_argument("--out", type=Path, help="also write the comparison as JSON")

    calibrate = commands.add_parser(
        "calibrate", help="give a run refit without a hold-out the temperature its hold-out twin fitted"
    )
    calibrate.add_argument("--checkpoint", required=True, help="the run trained with --holdout-fraction 0")
    calibrate.add_argument("--temperature-from", required=True, help="the same recipe, run with the hold-out")

    card = commands.add_parser("card", help="write a checkpoint's model card from evaluation summaries")
    card.add_argument("--checkpoint", required=True)
    card.add_argument("--test", type=Path, required=True, help="summary.json of the test evaluation")
    card.add_argument("--localisation", type=Path, nargs="*", default=[], help="summary.json files with heatmaps")
    card.add_argument("--commit", required=True, help="commit that produced the measurements")

    args = parser.parse_args(argv)
    if args.command == "card":
        import json

        from core.model_card import write_model_card

        summaries = [json.loads(p.read_text()) for p in args.localisation]
        print(write_model_card(args.checkpoint, json.loads(args.test.read_text()), summaries, args.commit))
        return 0
    if args.command == "calibrate":
        from core.checkpoint import CheckpointError, adopt_temperature

        try:
            temperature = adopt_temperature(args.checkpoint, args.temperature_from)
        except CheckpointError as error:
            print(error, file=sys.stderr)
            return 2
        print(f"{args.checkpoint}: temperature {temperature:.3f}, fitted on {args.temperature_from}'s hold-out")
        return 0
    if args.command == "bench":
        from core.bench import run_bench

        run_bench(args.checkpoints, args.repeats, args.batch, args.out)
        return 0
    if args.command == "serve":
        import uvicorn

        from core.service import create_app

        uvicorn.run(create_app(), host=args.host, port=args.port)
        return 0
    if args.command == "compare":
        return _compare(args)
    if args.command == "select":
        return _select(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "explain":
        return _explain(args)
    if args.command == "train":
        from core.checkpoint import CheckpointError
        from core.train import TrainOptions, cross_validate
        from core.train import train as run_training

        try:
            options = TrainOptions(
                arch=args.arch,
                data=args.data,
                out=args.out,
                splits=tuple(args.splits),
                epochs=args.epochs,
                image_size=args.image_size,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                init=args.init,
                teacher=args.teacher,
                distill_weight=args.distill_weight,
                consistent_teacher=args.consistent_teacher,
                ema_decay=args.ema,
                mixup_alpha=args.mixup,
                cutmix_alpha=args.cutmix,
                drop_path=args.drop_path,
                attention_transfer=args.attention_transfer,
                holdout_fraction=args.holdout_fraction,
                threads=args.threads,
                limit=args.limit,
                max_steps=args.max_steps,
                device=args.device,
                bf16=args.bf16,
                progress=not args.no_progress,
            )
            if args.folds:
                cross_validate(options, args.folds)
            else:
                run_training(options)
        except (CheckpointError, ValueError) as error:
            print(error, file=sys.stderr)
            return 2
    return 0


def _explain(args: argparse.Namespace) -> int:
    from core.batch import explain_files
    from core.checkpoint import CheckpointError
    from core.explain import CAM_METHODS

    if args.method not in CAM_METHODS:
        print(f"Unknown method '{args.method}'. Choose one of: {', '.join(CAM_METHODS)}.", file=sys.stderr)
        return 2
    try:
        results = explain_files(
            args.images,
            args.checkpoint,
            args.out,
            method=args.method,
            target=args.target,
            brain_mask=not args.no_brain_mask,
        )
    except CheckpointError as error:
        print(error, file=sys.stderr)
        return 2
    failed = sum("error" in r for r in results)
    print(f"{len(results) - failed} of {len(results)} images explained; results in {args.out / 'results.json'}")
    return 1 if failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    import json
    import shutil

    from core.checkpoint import CheckpointError
    from core.dataset import DatasetError
    from core.evaluate import DEFAULT_CACHE_DIR, HeatmapSettings, cached_evaluation, evaluate
    from core.explain import ExplainError

    mask = not args.no_brain_mask
    heatmaps = HeatmapSettings(args.method, mask, mask, args.threshold, args.layer) if args.method else None
    try:
        if args.cache:
            folder = cached_evaluation(
                args.checkpoint, args.data, args.split, heatmaps, DEFAULT_CACHE_DIR, mask_input=mask
            )
            shutil.copytree(folder, args.out, dirs_exist_ok=True)
            summary = json.loads((args.out / "summary.json").read_text())
        else:
            summary = evaluate(args.checkpoint, args.data, args.split, args.out, heatmaps=heatmaps, mask_input=mask)
    except (CheckpointError, DatasetError, ExplainError) as error:
        print(error, file=sys.stderr)
        return 2
    ece = summary["ece_15_bins"]
    print(
        f"{summary['num_images']} images: accuracy {summary['accuracy']:.3f}, macro-F1 {summary['macro_f1']:.3f}, "
        f"ECE {ece['before_temperature']:.3f} -> {ece['after_temperature']:.3f} after temperature; "
        f"{summary['images_per_second']} images/s; written to {args.out}"
    )
    if "localisation" in summary:
        overall = summary["localisation"]["all"]
        print("localisation: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in overall.items() if v["mean"] is not None))
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from core.checkpoint import CheckpointError, load_checkpoint
    from core.compare import heatmap_agreement, side_by_side, verdict
    from core.explain import ExplainError, explain
    from core.image_input import ImageInputError, load_image
    from core.render import png_bytes

    try:
        loaded = load_image(args.image.read_bytes(), args.image.name)
        models = [load_checkpoint(name) for name in args.checkpoints]
        mask = not args.no_brain_mask
        results = [explain(m, loaded.pixels, method=args.method, mask_input=mask, mask_heatmap=mask) for m in models]
    except (ImageInputError, CheckpointError, ExplainError, OSError) as error:
        print(getattr(error, "strerror", None) or error, file=sys.stderr)
        return 2
    names = (models[0].name, models[1].name)
    agree, sentence = verdict(names, *results)
    agreement = heatmap_agreement(results[0].heatmap, results[1].heatmap, args.threshold, loaded.pixel_spacing_mm)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.png").write_bytes(png_bytes(side_by_side(loaded.pixels, list(zip(names, results)))))
    report = {
        "image": str(args.image),
        "models": {name: result.summary() for name, result in zip(names, results)},
        "same_prediction": agree,
        "verdict": sentence,
        "threshold": args.threshold,
        "agreement": agreement.to_dict(),
    }
    (args.out / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    print(sentence)
    return 0


def _select(args: argparse.Namespace) -> int:
    import json

    from core.checkpoint import CheckpointError
    from core.dataset import DatasetError
    from core.selection import compare_checkpoints

    try:
        comparisons = compare_checkpoints(
            args.checkpoints, args.data, splits=tuple(args.splits), fraction=args.holdout_fraction,
            seed=args.seed, placement_split=args.placement_split,
        )  # fmt: skip
    except (CheckpointError, DatasetError) as error:
        print(error, file=sys.stderr)
        return 2
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
