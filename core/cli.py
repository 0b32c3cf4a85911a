"""Argument parsing for `python -m core`; each command calls one core function."""

from __future__ import annotations

import argparse
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
    train.add_argument("--init", choices=["scratch", "imagenet-lite0"], default="scratch")
    train.add_argument("--teacher", type=Path, help="checkpoint to distil from")
    train.add_argument("--limit", type=int, help="images per class (smoke runs)")
    train.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    train.add_argument("--no-progress", action="store_true")

    args = parser.parse_args(argv)
    if args.command == "train":
        from core.train import TrainOptions, train as run_training

        run_training(
            TrainOptions(
                arch=args.arch, data=args.data, out=args.out, splits=tuple(args.splits),
                epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
                lr=args.lr, seed=args.seed, init=args.init, teacher=args.teacher,
                limit=args.limit, max_steps=args.max_steps, progress=not args.no_progress,
            )
        )
    return 0
