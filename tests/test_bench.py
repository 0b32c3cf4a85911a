"""The benchmark measures what the pages do (it asserts no speed: targets are printed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import core.bench
from core.bench import bench_render

REPO = Path(__file__).resolve().parent.parent


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


def test_server_memory_is_read_for_the_whole_process_tree():
    """bench --service reads the server's memory from /proc: its workers are grandchildren."""
    import subprocess
    import sys

    from core.load_bench import process_tree, reset_peaks, tree_peak_mb, tree_rss_mb

    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        for _ in range(100):
            if len(process_tree(parent.pid)) == 2:
                break
            time.sleep(0.1)
        assert len(process_tree(parent.pid)) == 2
        assert 0 < tree_rss_mb(parent.pid) < 500
        reset_peaks(parent.pid)
        assert 0 < tree_peak_mb(parent.pid) < 500
    finally:
        for pid in process_tree(parent.pid)[::-1]:
            os.kill(pid, 9)
        parent.wait()


def test_thinking_clients_wait_a_random_time_before_each_request(monkeypatch):
    """bench --service's paced load: every client sends `each` requests, each after an
    exponential think time of the given mean (none for the saturating clients)."""
    import core.load_bench

    sent, waits = [], []
    monkeypatch.setattr(core.load_bench, "post", lambda base, name, data, **params: sent.append(params) or (200, 1.0))
    monkeypatch.setattr(core.load_bench.time, "sleep", waits.append)
    answers = core.load_bench.clients_latencies("http://x", b"", {"method": "Grad-CAM"}, clients=3, each=4)
    assert answers == [(200, 1.0)] * 12 and len(sent) == 12 and waits == [0.0] * 12

    waits.clear()
    core.load_bench.clients_latencies("http://x", b"", {}, clients=2, each=300, think_ms=200.0)
    assert len(waits) == 600 and len(set(waits)) > 500  # random, and different for each client
    assert 0.17 < sum(waits) / len(waits) < 0.23  # seconds: the mean think time


def test_the_latency_floor_is_clients_times_cpu_over_cores():
    from core.load_bench import latency_floor

    # 8 clients, 270 ms of CPU each, 2 cores, 310 ms alone: each waits for about 3.5 requests' worth
    assert abs(latency_floor(8, 270.0, 2, 310.0) - 3.48) < 0.01
    assert latency_floor(8, 270.0, 16, 310.0) < 0.5  # 16 cores: no floor above the target
    assert latency_floor(16, 270.0, 2, 310.0) == 2 * latency_floor(8, 270.0, 2, 310.0)


def test_importing_core_gives_numpy_blas_one_thread_in_a_fresh_process():
    """numpy's OpenBLAS threads spin after each call and take the cores from torch's next pass."""
    script = ("import core, threadpoolctl; print(sorted({i['num_threads'] for i in threadpoolctl.threadpool_info() "
              "if i['user_api'] == 'blas'}))")  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.endswith("_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True,
                            cwd=REPO)  # fmt: skip
    assert result.stdout.strip() == "[1]"
