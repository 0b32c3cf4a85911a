"""python -m core bench: latency, re-render, throughput and cold-start numbers, as ratios.

Each ratio compares two things measured in the same run on the same machine, so it means
something even on a noisy shared CPU. Not a test: targets are printed, not asserted.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from core.checkpoint import load_checkpoint
from core.config import list_checkpoints
from core.explain import explain, explain_batch
from core.explanation import ExplainSettings
from core.faithfulness import check_heatmap
from core.image_input import load_image
from core.preprocess import to_tensor
from core.render import explanation_panels

SAMPLE = Path(__file__).resolve().parent.parent / "sample_images" / "mni152_axial.png"


def _percentiles(samples_ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples_ms, 50)), float(np.percentile(samples_ms, 95))


def forward_backward_ms(model: torch.nn.Module, tensor: torch.Tensor) -> float:
    """One plain forward + backward of the top logit: the floor any gradient CAM pays."""
    started = time.perf_counter()
    inputs = tensor.clone().requires_grad_(True)
    logits = model(inputs)
    logits.max(dim=1).values.sum().backward()
    model.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) * 1000


def bench_model(name: str, image: np.ndarray, repeats: int, batch: int) -> dict:
    loaded = load_checkpoint(name)
    settings = loaded.config.preprocessing
    square = np.random.default_rng(0).random((settings.input_size, settings.input_size)).astype(np.float32)
    single, batched = to_tensor(square, settings), to_tensor(np.stack([square] * batch), settings)
    explain(loaded, image)  # warm-up
    forward_backward_ms(loaded.model, single)
    explain_ms, floor_ms = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        explain_ms.append(explain(loaded, image).timings_ms["total"])
        floor_ms.append(forward_backward_ms(loaded.model, single))
    p50, p95 = _percentiles(explain_ms)
    floor = float(np.median(floor_ms))

    images = [image] * batch
    explain_batch(loaded, images)  # warm-up at the batch shape, for both sides
    forward_backward_ms(loaded.model, batched)
    batch_ms, batch_floor_ms = [], []
    for _ in range(5):  # interleaved, medians
        started = time.perf_counter()
        explain_batch(loaded, images)
        batch_ms.append((time.perf_counter() - started) * 1000)
        batch_floor_ms.append(forward_backward_ms(loaded.model, batched))
    throughput = batch / (float(np.median(batch_ms)) / 1000)
    batch_floor = batch / (float(np.median(batch_floor_ms)) / 1000)
    return {
        **bench_faithfulness(loaded, image),
        "model": name,
        "explain_p50_ms": round(p50, 1),
        "explain_p95_ms": round(p95, 1),
        "forward_backward_ms": round(floor, 1),
        "explain_to_forward_backward": round(p50 / floor, 2),
        "evaluation_images_per_s": round(throughput, 2),
        "batched_forward_backward_images_per_s": round(batch_floor, 2),
        "throughput_ratio": round(throughput / batch_floor, 2),
    }


def bench_faithfulness(loaded, image: np.ndarray, repeats: int = 3) -> dict:
    """The Explain page's "Check this heatmap" at the checkpoint's default method and layer:
    median seconds of `repeats` runs after a warm-up (target <= 3 s on 2 CPU cores)."""
    settings = ExplainSettings()
    explanation = explain(loaded, image, settings)
    check_heatmap(loaded, image, explanation, settings)  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        check_heatmap(loaded, image, explanation, settings)
        samples.append(time.perf_counter() - started)
    return {"faithfulness_check_s": round(float(np.median(samples)), 2)}


def bench_render(repeats: int = 50) -> dict:
    """The three panels (threshold + overlay + outline) of a 512x512 slice, no model call, for two heatmaps:
    a CAM-like one (a 6x6 map upsampled, as a CAM at the last layer is) and per-pixel noise
    (the worst case: thousands of outline contours)."""
    rng = np.random.default_rng(0)
    image = rng.random((512, 512)).astype(np.float32)
    cam_like = cv2.resize(rng.random((6, 6)).astype(np.float32), (512, 512), interpolation=cv2.INTER_LINEAR)
    noise = np.clip(rng.normal(0.5, 0.2, (512, 512)), 0, 1).astype(np.float32)
    report = {}
    for name, heatmap in (("rerender_512", cam_like), ("rerender_512_noise", noise)):
        samples = []
        for i in range(repeats):
            started = time.perf_counter()
            explanation_panels(image, heatmap, threshold=0.3 + 0.4 * (i % 2))
            samples.append((time.perf_counter() - started) * 1000)
        p50, p95 = _percentiles(samples)
        report.update({f"{name}_p50_ms": round(p50, 2), f"{name}_p95_ms": round(p95, 2)})
    return report


def bench_cold_start(name: str) -> float:
    """Seconds from starting a Python process to its first explanation."""
    code = (
        "from core.checkpoint import load_checkpoint; from core.explain import explain; "
        "from core.image_input import load_image; import sys; "
        f"explain(load_checkpoint({name!r}), load_image(open({str(SAMPLE)!r}, 'rb').read(), 'a.png').pixels)"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
    return time.perf_counter() - started


def run_bench(names: list[str] | None, repeats: int, batch: int, out: Path | None) -> dict:
    names = names or list_checkpoints()
    image = load_image(SAMPLE.read_bytes(), SAMPLE.name).pixels
    report = {
        "machine": f"{platform.machine()} {platform.processor() or 'CPU'}, torch threads {torch.get_num_threads()}",
        "torch": torch.__version__,
        "sample": SAMPLE.name,
        "image_shape": list(image.shape),
        "models": [bench_model(name, image, repeats, batch) for name in names],
        "render": bench_render(),
        "cold_start_s": {name: round(bench_cold_start(name), 2) for name in names},
        "targets": {
            "explain_to_forward_backward": "<= 1.3",
            "rerender_512_p50_ms": "<= 15",
            "throughput_ratio": ">= 0.8",
            "faithfulness_check_s": "<= 3",
        },  # fmt: skip
    }
    _print_table(report)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _print_table(report: dict) -> None:
    print(f"machine: {report['machine']}, torch {report['torch']}")
    header = ("model", "explain p50 ms", "p95 ms", "fwd+bwd ms", "ratio (<=1.3)", "eval img/s", "batch fwd+bwd img/s",
              "ratio (>=0.8)", "faithfulness check s (<=3)", "cold start s")  # fmt: skip
    print(" | ".join(header))
    for row in report["models"]:
        print(" | ".join(str(v) for v in (
            row["model"], row["explain_p50_ms"], row["explain_p95_ms"], row["forward_backward_ms"],
            row["explain_to_forward_backward"], row["evaluation_images_per_s"],
            row["batched_forward_backward_images_per_s"], row["throughput_ratio"], row["faithfulness_check_s"],
            report["cold_start_s"][row["model"]],
        )))  # fmt: skip
    render = report["render"]
    print(f"re-render 512x512 (the three panels), CAM-like: p50 {render['rerender_512_p50_ms']} ms, "
          f"p95 {render['rerender_512_p95_ms']} ms (target <= 15 ms); noise heatmap (worst case): "
          f"p50 {render['rerender_512_noise_p50_ms']} ms, p95 {render['rerender_512_noise_p95_ms']} ms")  # fmt: skip


def bench_engines(checkpoint: str, folder: Path, out: Path | None, limit: int | None = None) -> dict:
    """`explain FOLDER` by the local engine at one torch thread, then by Ray with 1 and 2 actors:
    images/s of each whole command (Ray's start-up included), the two ratios of #31's targets,
    and whether every row and picture is identical (timings aside)."""
    import tempfile

    from core.batch import expand_inputs, explain_files

    files = [path for path, _ in expand_inputs([folder])][:limit]
    threads = torch.get_num_threads()
    runs, outputs = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, options in (("local", {}), ("ray_1", {"workers": 1}), ("ray_2", {"workers": 2})):
            torch.set_num_threads(1)
            started = time.perf_counter()
            engine = {"engine": "ray", **options} if options else {}
            results = explain_files(files, checkpoint, Path(scratch) / name, progress=False, **engine)
            runs[name] = round(len(files) / (time.perf_counter() - started), 3)
            outputs[name] = _comparable(Path(scratch) / name, results)
        torch.set_num_threads(threads)
    report = {
        "checkpoint": checkpoint,
        "images": len(files),
        "images_per_s": runs,
        "ray_2_over_ray_1": round(runs["ray_2"] / runs["ray_1"], 2),
        "ray_1_overhead": round(runs["local"] / runs["ray_1"] - 1, 3),
        "identical_to_local": {name: outputs[name] == outputs["local"] for name in ("ray_1", "ray_2")},
        "targets": {"ray_2_over_ray_1": ">= 1.6", "ray_1_overhead": "<= 0.15"},
    }
    print(json.dumps(report, indent=2))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _comparable(folder: Path, results: list[dict]) -> tuple:
    rows = [{k: v for k, v in row.items() if k != "timings_ms"} for row in results]
    pictures = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}
    return json.dumps(rows, sort_keys=True), (folder / "summary.csv").read_text(), pictures
