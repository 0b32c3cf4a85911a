"""python -m core bench --service: the HTTP API under load, as ratios measured in one run.

It starts `python -m core serve` as a separate process (so its memory can be read from /proc,
workers included) and measures: Grad-CAM latency alone and with 8 clients while a Score-CAM
runs; throughput with 2 workers against 1; the server's peak memory for single hostile or large
uploads; and its memory after 100 and after `requests` requests. Linux only (/proc).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from core.bench import SAMPLE, _percentiles

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running_server(workers: int, queue_limit: int = 64):
    """(base URL, server pid) of `python -m core serve` on a free port, stopped afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "core", "serve", "--port", str(port), "--workers", str(workers),
               "--queue", str(queue_limit)]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("The server did not start within 3 minutes.")
        _wait_for_workers(server.pid, workers)
        yield base, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for_workers(pid: int, workers: int) -> None:
    """Until the worker processes have loaded their models (their memory stops growing)."""
    previous = -1
    for _ in range(120):
        current = tree_rss_mb(pid)
        if len(process_tree(pid)) >= workers + 2 and abs(current - previous) < 1:
            return
        previous = current
        time.sleep(1)


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (workers are the fork server's children)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += process_tree(int(child))
    return found


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_rss_mb(pid: int) -> float:
    """The server's memory, workers included: the sum of proportional set sizes (pages shared
    by the workers and the fork server they come from are counted once)."""
    total_kb = 0
    for p in process_tree(pid):
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        total_kb += next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return total_kb / 1024


def tree_peak_mb(pid: int) -> float:
    """The largest peak RSS of any one process of the server since the last reset_peaks."""
    return max(_status_kb(p, "VmHWM") for p in process_tree(pid)) / 1024


def reset_peaks(pid: int) -> None:
    for p in process_tree(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass


_CLIENTS = threading.local()


def post(base: str, name: str, data: bytes, **params) -> tuple[int, float]:
    """(status, milliseconds) of one POST /predict, on this thread's kept-alive connection (a new
    connection per request would spend the shared cores on the client, not the server)."""
    if not hasattr(_CLIENTS, "client"):
        _CLIENTS.client = httpx.Client(timeout=600)
    started = time.perf_counter()
    response = _CLIENTS.client.post(f"{base}/predict", params=params, files={"file": (name, data)})
    return response.status_code, (time.perf_counter() - started) * 1000


@contextmanager
def score_cam_running(base: str, sample: bytes, checkpoint: str):
    """Keeps one Score-CAM request running (the next starts when one ends); yields the list its
    (status, ms) results are appended to."""
    stop, runs = threading.Event(), []

    def keep_running():
        while not stop.is_set():
            runs.append(post(base, "s.png", sample, checkpoint=checkpoint, method="Score-CAM"))

    slow = threading.Thread(target=keep_running)
    slow.start()
    time.sleep(2)
    try:
        yield runs
    finally:
        stop.set()
        slow.join()


def clients_latencies(base: str, sample: bytes, params: dict, clients: int, each: int, think_ms: float = 0.0):
    """(status, ms) of `each` requests from each of `clients` concurrent clients; a client that
    thinks waits an exponential time of mean `think_ms` (seeded per client) before each request."""

    def client(index: int) -> list[tuple[int, float]]:
        waits = np.random.default_rng(index).exponential(think_ms, each) / 1000 if think_ms else np.zeros(each)
        results = []
        for wait in waits:
            time.sleep(wait)
            results.append(post(base, "s.png", sample, **params))
        return results

    with ThreadPoolExecutor(clients) as pool:
        return [answer for answers in pool.map(client, range(clients)) for answer in answers]


def hostile_uploads() -> dict[str, bytes]:
    """Single uploads that once took gigabytes: a .nii.gz declaring a 680^3 float volume, a
    39.7-megapixel 16-bit PNG, and large valid uploads within the limits: a 12-megapixel 16-bit
    PNG and a NIfTI volume just under the 200 MB that volumes may have."""
    import nibabel

    from core.image_input import MAX_VOLUME_FILE_BYTES

    header = nibabel.Nifti1Header()
    header.set_data_shape((680, 680, 680))
    header.set_data_dtype(np.float32)
    buffer = io.BytesIO()
    buffer.write(header.binaryblock + b"\0" * 4)
    with gzip.GzipFile(fileobj=(bomb := io.BytesIO()), mode="wb") as packed:
        packed.write(buffer.getvalue() + b"\0" * (64 * 2**20))
    uploads = {"bomb.nii.gz": bomb.getvalue()}
    for name, side in (("bomb_39mp.png", 6300), ("large_12mp.png", 3500)):
        ramp = np.linspace(0, 65535, side, dtype=np.float64)
        png = io.BytesIO()
        Image.fromarray(np.uint16(np.add.outer(ramp, ramp) / 2)).save(png, format="PNG")
        uploads[name] = png.getvalue()
    slices = (MAX_VOLUME_FILE_BYTES - 2**20) // (512 * 512 * 2)
    ramp = np.uint16(np.add.outer(np.arange(512), np.arange(512)) * 32)
    volume = np.repeat(ramp[:, :, None], slices, axis=2)
    uploads[f"large_{slices}_slices.nii"] = nibabel.Nifti1Image(volume, np.eye(4)).to_bytes()
    return uploads


def bench_throughput(checkpoint: str, sample: bytes, requests: int = 80) -> dict:
    """Requests per second from 4 clients with 1 worker, then with 2."""
    throughput = {}
    fast = {"checkpoint": checkpoint, "method": "Grad-CAM"}
    for workers in (1, 2):
        with running_server(workers=workers) as (base, pid):
            with ThreadPoolExecutor(4) as clients:
                list(clients.map(lambda _: post(base, "s.png", sample, **fast), range(8)))  # warm-up, every client
                started, main_cpu, all_cpu = time.perf_counter(), cpu_seconds(pid), _tree_cpu(pid)
                list(clients.map(lambda _: post(base, "s.png", sample, **fast), range(requests)))
            throughput[f"workers_{workers}_requests_per_s"] = round(requests / (time.perf_counter() - started), 2)
            main_ms = (cpu_seconds(pid) - main_cpu) * 1000 / requests
            throughput[f"workers_{workers}_cpu_ms_per_request"] = {
                "server_process": round(main_ms, 1),
                "workers": round((_tree_cpu(pid) - all_cpu) * 1000 / requests - main_ms, 1),
            }
    one, two = throughput["workers_1_requests_per_s"], throughput["workers_2_requests_per_s"]
    throughput["ratio_2_over_1"] = round(two / one, 2)
    return throughput


def latency_floor(clients: int, cpu_ms_per_request: float, cores: int, serial_p50_ms: float) -> float:
    """The least mean latency, over the serial p50, that any scheduler can give `clients` that
    never pause (Little's law): with every request needing `cpu_ms_per_request` of CPU, `cores`
    serve at most cores / cpu requests per ms, so each waits clients x cpu / cores on average."""
    return clients * cpu_ms_per_request / (cores * serial_p50_ms)


def _tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in process_tree(pid))


def bench_service(checkpoint: str, requests: int = 1000, out: Path | None = None) -> dict:
    sample = SAMPLE.read_bytes()
    fast = {"checkpoint": checkpoint, "method": "Grad-CAM"}
    report: dict = {"checkpoint": checkpoint, "sample": SAMPLE.name}
    with running_server(workers=2) as (base, pid):
        post(base, "s.png", sample, **fast)  # warm-up
        serial = [post(base, "s.png", sample, **fast)[1] for _ in range(20)]
        serial_p50 = _percentiles(serial)[0]

        with score_cam_running(base, sample, checkpoint) as slow_runs:
            answers = clients_latencies(base, sample, fast, clients=8, each=5)
            # Users who read each result before the next request: the same 8 clients, each waiting
            # a random think time (mean 8 serial p50s) first, which offers about half of what 2
            # workers can serve. Saturated closed-loop clients cannot reach 3x on 2 cores (each
            # waits behind about 4 others); this shows whether the Score-CAM still delays anyone.
            paced = clients_latencies(base, sample, fast, clients=8, each=10, think_ms=8 * serial_p50)
        calm = clients_latencies(base, sample, fast, clients=8, each=10, think_ms=8 * serial_p50)
        loaded_p50, loaded_p95 = _percentiles([ms for _, ms in answers])
        paced_p95, calm_p95 = _percentiles([ms for _, ms in paced])[1], _percentiles([ms for _, ms in calm])[1]
        report["latency"] = {
            "grad_cam_serial_p50_ms": round(serial_p50, 1),
            "grad_cam_p50_ms_8_clients_with_score_cam": round(loaded_p50, 1),
            "grad_cam_p95_ms_8_clients_with_score_cam": round(loaded_p95, 1),
            "p95_over_serial_p50": round(loaded_p95 / serial_p50, 2),
            "grad_cam_p95_ms_8_thinking_clients_with_score_cam": round(paced_p95, 1),
            "thinking_p95_over_serial_p50": round(paced_p95 / serial_p50, 2),
            "grad_cam_p95_ms_8_thinking_clients_no_score_cam": round(calm_p95, 1),
            "score_cam_ms": round(float(np.median([ms for _, ms in slow_runs])), 1),
            "statuses": sorted({status for status, _ in answers + paced + calm + slow_runs}),
        }

        uploads = {}
        for name, data in hostile_uploads().items():
            reset_peaks(pid)
            before = tree_rss_mb(pid)
            status, _ = post(base, name, data, **fast)
            uploads[name] = {"bytes": len(data), "status": status, "peak_process_mb": round(tree_peak_mb(pid), 1),
                             "server_process_peak_mb": round(_status_kb(pid, "VmHWM") / 1024, 1),
                             "server_mb_before": round(before, 1),
                             "server_mb_after": round(tree_rss_mb(pid), 1)}  # fmt: skip
        report["single_uploads"] = uploads

        with ThreadPoolExecutor(4) as clients:
            list(clients.map(lambda _: post(base, "s.png", sample, **fast), range(100)))
            after_100 = tree_rss_mb(pid)
            list(clients.map(lambda _: post(base, "s.png", sample, **fast), range(requests - 100)))
            after_all = tree_rss_mb(pid)
        report["memory"] = {"rss_after_100_mb": round(after_100, 1), f"rss_after_{requests}_mb": round(after_all, 1),
                            "growth_mb": round(after_all - after_100, 1),
                            "server_process_rss_mb": round(_status_kb(pid, "VmRSS") / 1024, 1)}  # fmt: skip

    report["throughput"] = bench_throughput(checkpoint, sample)
    cpu = report["throughput"]["workers_2_cpu_ms_per_request"]
    floor = latency_floor(8, cpu["server_process"] + cpu["workers"], os.cpu_count() or 1, serial_p50)
    report["latency"]["mean_over_serial_p50_floor_8_clients"] = round(floor, 2)
    report["targets"] = {
        "p95_over_serial_p50": "<= 3 (at least mean_over_serial_p50_floor_8_clients on this machine: Little's law)",
        "thinking_p95_over_serial_p50": "<= 3 (the same clients reading each result first; not the issue's target)",
        "ratio_2_over_1": ">= 1.7",
        "peak_process_mb": "<= 1536 for every single upload",
        "growth_mb": "<= 100",
    }
    print(json.dumps(report, indent=2))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report
