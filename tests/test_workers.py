"""The worker pool: results, errors, progress, cancelling, time limits, crashes and a full queue."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from core.explain import explain
from core.explanation import ExplainSettings
from core.image_input import ImageInputError
from core.workers import (
    JobCancelled,
    JobTimedOut,
    PoolBusy,
    WorkerCrashed,
    WorkerPool,
    decode_and_explain_task,
    explain_task,
)
from tests.conftest import encode, head_phantom


def sleep_task(seconds: float, report):
    for step in range(10):
        time.sleep(seconds / 10)
        report(step + 1, 10)
    return os.getpid()


def abort_task(report):
    os.abort()  # what a native decoder does on some hostile files


def failing_task(report):
    raise ImageInputError("This file is not an image.")


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(workers=2, queue_limit=2) as pool:
        yield pool


def wait_until_started(job):
    while job.started is None:
        time.sleep(0.01)


def test_results_errors_and_progress(pool):
    job = pool.submit(sleep_task, 0.5)
    assert job.result(timeout=60) in pool.pids()
    assert job.progress == (10, 10)
    with pytest.raises(ImageInputError, match="not an image"):
        pool.run(failing_task)


def test_a_slow_job_occupies_one_worker_not_the_pool(pool):
    slow = pool.submit(sleep_task, 5)
    wait_until_started(slow)
    started = time.monotonic()
    pool.run(sleep_task, 0.1)
    assert time.monotonic() - started < 4 and not slow.done()
    slow.cancel()
    with pytest.raises(JobCancelled):
        slow.result(timeout=10)


def test_cancelling_a_running_job_stops_its_worker_and_the_pool_goes_on(pool):
    restarts = pool.restarts
    job = pool.submit(sleep_task, 30)
    wait_until_started(job)
    while job.progress == (0, 0):
        time.sleep(0.01)
    assert job.eta_s() is not None and job.eta_s() > 0
    job.cancel()
    with pytest.raises(JobCancelled):
        job.result(timeout=10)
    assert pool.restarts == restarts + 1
    assert pool.run(sleep_task, 0.05) in pool.pids()


def test_a_job_past_its_time_limit_is_stopped(pool):
    with pytest.raises(JobTimedOut, match="0.3 s"):
        pool.run(sleep_task, 30, time_limit_s=0.3)


def test_a_worker_that_aborts_fails_its_job_only(pool):
    with pytest.raises(WorkerCrashed, match="exit code"):
        pool.run(abort_task)
    assert pool.run(sleep_task, 0.05) in pool.pids()


def test_a_full_queue_is_refused_at_once_and_a_queued_job_can_be_cancelled():
    with WorkerPool(workers=1, queue_limit=1) as pool:
        running = pool.submit(sleep_task, 30)
        queued = pool.submit(sleep_task, 0.05)
        with pytest.raises(PoolBusy) as refused:
            pool.submit(sleep_task, 0.05)
        assert refused.value.retry_after_s >= 1
        queued.cancel()
        with pytest.raises(JobCancelled):
            queued.result(timeout=1)
        running.cancel()
        assert pool.run(sleep_task, 0.05) in pool.pids()


def test_the_worker_explains_as_the_process_does(pool, checkpoint_root, tiny_model):
    image = head_phantom(96)
    settings = ExplainSettings("Score-CAM")
    job = pool.submit(explain_task, str(checkpoint_root / "tiny_convnext"), image, settings)
    there = job.result(timeout=120)
    here = explain(tiny_model, image, settings)
    assert job.progress[0] == job.progress[1] > 2  # one pass per batch of feature maps, all reported
    np.testing.assert_allclose(there.probabilities, here.probabilities, atol=1e-6)
    np.testing.assert_allclose(there.heatmap, here.heatmap, atol=1e-5)
    folder = str(checkpoint_root / "tiny_convnext")
    loaded, result = pool.run(decode_and_explain_task, folder, encode(image, "PNG"), "scan.png", ExplainSettings())
    assert loaded.pixels.shape == image.shape and result.predicted_label in tiny_model.config.label_names
    with pytest.raises(ImageInputError):
        pool.run(decode_and_explain_task, folder, b"junk", "scan.png", ExplainSettings())


def resident_mb_task(data: bytes, report):
    """The worker's resident memory in MB, with `data` received."""
    return _resident_mb(os.getpid())


def _resident_mb(pid: int) -> float:
    status = open(f"/proc/{pid}/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_a_large_upload_is_let_go_by_the_pool_and_the_worker_once_its_job_ends():
    """A worker kept the last job's arguments (an upload of up to 200 MB) alive until its next job,
    and so did the pool's record of the job while the worker ran."""
    with WorkerPool(workers=1, queue_limit=1) as pool:
        pool.run(sleep_task, 0.0)
        (pid,) = pool.pids()
        before = _resident_mb(pid)
        job = pool.submit(resident_mb_task, os.urandom(150 * 2**20))
        holding = job.result(timeout=120)
        assert holding > before + 100  # the upload was there
        time.sleep(0.2)
        assert _resident_mb(pid) < before + 30
        assert job.args == ()


def digest_task(small: bytes, large: bytes, text: str, report):
    import hashlib

    return small, hashlib.sha256(large).hexdigest(), len(large), text


def test_large_byte_arguments_travel_raw_and_arrive_intact(pool):
    """Arguments of 1 MB and more go beside the pickled job, not inside it, in their places."""
    import hashlib

    large = os.urandom(3 * 2**20 + 7)
    small = b"x" * 10
    assert pool.run(digest_task, small, large, "name.dcm") == (small, hashlib.sha256(large).hexdigest(), len(large),
                                                               "name.dcm")  # fmt: skip
