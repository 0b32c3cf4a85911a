"""Where do checkpoints' attention-transfer layers look? For each checkpoint, its spatial attention
(the channel mean of squared activations, as `--attention-transfer` compares them) at its two paired
layers, mapped back to the slice and masked to the head, scored against the radiologists' outlines
of the grouped hold-out's tumours: pointing game and the share of the map's mass inside the outline.

    python scripts/attention_pointing.py checkpoints/efficientnet_lite0 checkpoints/convnext_atto --limit 120

The sixteenth robustness round of docs/training.md reads it: a teacher whose attention points at
the tumour carries a signal the student can be pulled towards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.checkpoint import LoadedModel, load_checkpoint  # noqa: E402
from core.explain import apply_brain_mask  # noqa: E402
from core.inference import model_input  # noqa: E402
from core.localisation import mass_inside, pointing_game  # noqa: E402
from core.preprocess import heatmap_to_slice, prepare_for_model  # noqa: E402
from core.sweep import HOLDOUT, load_outlined_cases  # noqa: E402
from core.training.distillation import attention_layers, attention_map, keep_outputs  # noqa: E402


def attention_scores(loaded: LoadedModel, cases) -> dict[str, tuple[float, float]]:
    """Per paired layer: mean pointing game and mean mass inside the outline over `cases`."""
    layers = attention_layers(loaded.config.architecture)
    outputs, handles = keep_outputs(loaded.model, layers)
    size = loaded.config.preprocessing.input_size
    scores = {layer: ([], []) for layer in layers}
    try:
        for case in cases:
            prepared = prepare_for_model(case.image, loaded.config.preprocessing, mask_input=True)
            with torch.no_grad():
                loaded.model(model_input(torch.from_numpy(prepared.square)[None], loaded.config.preprocessing))
            for layer in layers:
                attention = attention_map(outputs[layer], (size, size)).reshape(size, size).numpy()
                full = heatmap_to_slice(attention / max(float(attention.max()), 1e-12), prepared.box, case.image.shape)
                full = apply_brain_mask(full, prepared.brain.mask if prepared.brain.found else None)
                scores[layer][0].append(pointing_game(full, case.tumour))
                scores[layer][1].append(mass_inside(full, case.tumour))
    finally:
        for handle in handles:
            handle.remove()
    return {layer: (float(np.mean(points)), float(np.mean(mass))) for layer, (points, mass) in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/brain-tumor-mri"))
    parser.add_argument("--limit", type=int, default=120, help="outlined hold-out tumours, drawn with seed 0")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = None
    for checkpoint in args.checkpoints:
        loaded = load_checkpoint(checkpoint, reliability=False)
        if cases is None:
            cases = load_outlined_cases(args.data, HOLDOUT, list(loaded.config.label_names), args.limit, 0)
        scores = attention_scores(loaded, cases)
        shown = ", ".join(f"{layer}: pointing {p:.3f}, mass inside {m:.3f}" for layer, (p, m) in scores.items())
        print(f"{checkpoint} ({len(cases)} tumours): {shown}", flush=True)


if __name__ == "__main__":
    main()
