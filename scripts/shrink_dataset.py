"""Copy a ROOT/SPLIT/<class>/<image> dataset with every image at most --max-side pixels,
re-saved as JPEG, so the training splits fit the 64 MiB a GPU machine is sent.

    python scripts/shrink_dataset.py ../shared/data/brain-tumor-mri .device_data/brain-tumor-mri

The training folder (192-224 px inputs) loses little; evaluate on the original images.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image


def shrink(source: Path, target: Path, splits: list[str], max_side: int, quality: int) -> int:
    count = 0
    for split in splits:
        for path in sorted((source / split).glob("*/*")):
            out = target / path.relative_to(source)
            out.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as image:
                image = image.convert("L") if image.mode not in ("L", "RGB") else image
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                image.save(out, format="JPEG", quality=quality)
            count += 1
    shutil.copy(source / "metadata.csv", target / "metadata.csv")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--quality", type=int, default=92)
    args = parser.parse_args()
    count = shrink(args.source, args.target, args.splits, args.max_side, args.quality)
    print(f"wrote {count} images under {args.target}")


if __name__ == "__main__":
    main()
