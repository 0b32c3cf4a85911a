"""Copy the training splits of a ROOT/SPLIT/<class>/<image> dataset with every image at most
--max-side pixels, re-saved as JPEG, with their LabelMe outlines scaled alike and the MNI152 slices of
--healthy-template beside them, so they fit the 64 MiB a GPU machine is sent:

    python scripts/shrink_dataset.py ../shared/data/brain-tumor-mri .device_data/brain-tumor-mri

Training inputs (192-224 px) lose little at 288 px; evaluate on the original images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.dataset import shrink_copy  # noqa: E402
from core.training.data import save_template_planes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--max-side", type=int, default=288)
    parser.add_argument("--quality", type=int, default=85)
    parser.add_argument(
        "--no-template", action="store_true", help="leave out the MNI152 slices (train --healthy-template)"
    )
    args = parser.parse_args()
    count = shrink_copy(args.source, args.target, args.splits, args.max_side, args.quality)
    print(f"wrote {count} images under {args.target}")
    if not args.no_template:
        print(f"wrote {save_template_planes(args.target)} (train --healthy-template reads it; nilearn not needed)")


if __name__ == "__main__":
    main()
