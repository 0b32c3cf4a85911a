"""The Ray engine gives the local engine's rows and pictures, and fails a bad file in its row.

The local engine runs at one torch thread here, as each Ray actor does: at two threads a
heatmap can differ from it in the last bit of a pixel (the order of float sums changes).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.cli import main
from core.evaluate import evaluate
from core.explanation import ExplainSettings
from tests.conftest import encode, head_phantom, needs_data

ray = pytest.importorskip("ray")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _without_timings(results_json):
    images = json.loads(results_json.read_text())["images"]
    return [{k: v for k, v in image.items() if k != "timings_ms"} for image in images]


def test_ray_explain_matches_local_and_shuts_down(checkpoint_root, tmp_path, one_thread, capsys):
    scans = tmp_path / "scans"
    (scans / "deep").mkdir(parents=True)
    for index in range(5):
        (scans / ("deep" if index % 2 else "") / f"scan{index}.png").write_bytes(encode(head_phantom(96, index), "PNG"))
    (scans / "broken.png").write_bytes(b"\x89PNG not really")
    common = ["explain", str(scans), "--checkpoint", str(checkpoint_root / "tiny_convnext"), "--method", "Grad-CAM"]

    assert main([*common, "--out", str(tmp_path / "local")]) == 1  # 1: a file failed
    assert main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 1
    assert not ray.is_initialized()  # the runtime the command started is gone

    local, distributed = (
        _without_timings(tmp_path / "local" / "results.json"),
        _without_timings(tmp_path / "ray" / "results.json"),
    )
    assert distributed == local and len(local) == 6
    assert [("error" in row) for row in local] == [True, False, False, False, False, False]
    assert (tmp_path / "ray" / "summary.csv").read_text() == (tmp_path / "local" / "summary.csv").read_text()
    pictures = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.png"))
    assert len(pictures) == 10
    for picture in pictures:
        assert (tmp_path / "ray" / picture).read_bytes() == (tmp_path / "local" / picture).read_bytes()
    assert "broken.png" in capsys.readouterr().err


@needs_data
def test_ray_evaluate_matches_local(checkpoint_root, small_dataset, tmp_path, one_thread):
    from core.evaluation_store import read_evaluation

    broken = small_dataset / "test" / "glioma" / "zz_broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    try:
        settings = ExplainSettings("Grad-CAM")
        options = {"settings": settings, "heatmaps": True, "batch_size": 4, "progress": False}
        checkpoint = checkpoint_root / "tiny_convnext"
        local = evaluate(checkpoint, small_dataset, "test", tmp_path / "local", **options)
        distributed = evaluate(checkpoint, small_dataset, "test", tmp_path / "ray", engine="ray", workers=2, **options)
    finally:
        broken.unlink()
    assert not ray.is_initialized()
    for timing in ("seconds", "images_per_second"):
        local.pop(timing), distributed.pop(timing)
    assert distributed == local and [s["image"] for s in local["skipped"]] == ["test/glioma/zz_broken.jpg"]
    assert (tmp_path / "ray" / "predictions.csv").read_text() == (tmp_path / "local" / "predictions.csv").read_text()
    ours, theirs = read_evaluation(tmp_path / "local"), read_evaluation(tmp_path / "ray")
    assert ours.heatmaps.keys() == theirs.heatmaps.keys() and len(ours.heatmaps) == 12
    assert all(np.array_equal(ours.heatmaps[k], theirs.heatmaps[k]) for k in ours.heatmaps)
