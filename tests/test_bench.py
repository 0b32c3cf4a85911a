"""The benchmark measures what the pages do (it asserts no speed: targets are printed)."""

from __future__ import annotations

import core.bench
from core.bench import bench_render


def test_rerender_bench_times_the_pages_panels_at_both_thresholds(monkeypatch):
    calls = []
    real = core.bench.explanation_panels

    def counting(image, heatmap, **options):
        calls.append((image.shape, options["threshold"]))
        return real(image, heatmap, **options)

    monkeypatch.setattr(core.bench, "explanation_panels", counting)
    report = bench_render(repeats=4)
    assert calls == [((512, 512), 0.3), ((512, 512), 0.7)] * 4  # CAM-like heatmap, then per-pixel noise
    assert set(report) == {f"{name}_{p}_ms" for name in ("rerender_512", "rerender_512_noise") for p in ("p50", "p95")}
