"""A bounded pool of worker processes for the heavy work of the app and the API.

Each worker is a process with its own model replicas and one torch thread, so a slow request
(Score-CAM, a noise tunnel) occupies one worker and nobody else waits behind a shared model.
Jobs beyond the workers wait in a bounded queue; past it, `submit` refuses at once (PoolBusy,
the API's 503). A job reports progress, can be cancelled and has a time limit; since a torch
pass cannot be interrupted, cancelling or overrunning a running job stops its process and
starts a fresh one. Decoding runs in the workers too: a native decoder that aborts on a
hostile file ends one worker process, and that job alone fails (WorkerCrashed).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import sys
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

POLL_S = 0.02  # how often a slot looks for messages, cancellation and the deadline
# Niceness of the workers that run slow methods: a Score-CAM then takes the CPU only when the
# interactive requests leave it free (nice 10 weighs about a tenth of nice 0 in Linux's scheduler).
SLOW_NICE = 10
# Slow requests that may wait for a slow worker before the API answers 503.
SLOW_QUEUE_LIMIT = 2


class PoolBusy(RuntimeError):
    """Every worker is busy and the queue is full."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"The server is busy with other scans; try again in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class JobCancelled(RuntimeError):
    """The job was cancelled before it finished."""


class JobTimedOut(RuntimeError):
    """The job ran past its time limit and was stopped."""


class WorkerCrashed(RuntimeError):
    """The worker process ended while running the job (for example a native decoder aborting)."""


@dataclass
class Job:
    """One piece of work: `future` gets its result or exception; `progress` is (done, total)."""

    task: Callable
    args: tuple
    time_limit_s: float | None
    future: Future = field(default_factory=Future)
    progress: tuple[int, int] = (0, 0)
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop the job: dropped from the queue, or its worker process stopped if it is running."""
        self._cancel.set()
        if self.started is None:
            self._fail(JobCancelled("Cancelled."))

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None):
        return self.future.result(timeout)

    def eta_s(self) -> float | None:
        """Seconds left, from the share of passes done so far (None before the first one)."""
        done, total = self.progress
        if self.started is None or not done or not total:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed * (total - done) / done

    def _fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def _succeed(self, result) -> None:
        if not self.future.done():
            self.future.set_result(result)


class WorkerPool:
    """`workers` processes and a queue of at most `queue_limit` waiting jobs.

    Args:
        workers: processes; each runs one job at a time with one torch thread.
        queue_limit: jobs that may wait beyond the running ones before submit raises PoolBusy.
        time_limit_s: default limit per job (None: none); submit can set its own.
        preload: checkpoint folders every worker loads as it starts, so no request waits for it.
        nice: added to the workers' niceness (SLOW_NICE for slow methods), so they yield the CPU.
    """

    def __init__(
        self,
        workers: int = 2,
        queue_limit: int = 8,
        time_limit_s: float | None = None,
        preload: list[Path] | tuple = (),
        nice: int = 0,
    ):
        self.workers, self.queue_limit, self.time_limit_s = workers, queue_limit, time_limit_s
        self.nice = nice
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._waiting: list[Job] = []
        self._lock = threading.Lock()
        self._context = _context()
        self._preload = [str(path) for path in preload]
        self.restarts = 0
        self._slots = [_Slot(self, index) for index in range(workers)]
        for slot in self._slots:
            slot.start()

    def submit(self, task: Callable, *args, time_limit_s: float | None = None) -> Job:
        """Queue `task(*args, report=...)` (a module-level function) for a worker; PoolBusy if full."""
        with self._lock:
            running = sum(slot.job is not None and not slot.job.cancelled for slot in self._slots)
            waiting = sum(not job.cancelled for job in self._waiting)
            if running + waiting >= self.workers + self.queue_limit:
                raise PoolBusy(retry_after_s=max(1, round(self._typical_job_s() * (1 + waiting / self.workers))))
            job = Job(task, args, time_limit_s if time_limit_s is not None else self.time_limit_s)
            self._waiting.append(job)
        self._jobs.put(job)
        return job

    def run(self, task: Callable, *args, time_limit_s: float | None = None):
        """submit() and wait for the result."""
        return self.submit(task, *args, time_limit_s=time_limit_s).result()

    def pids(self) -> list[int]:
        return [slot.process.pid for slot in self._slots if slot.process is not None]

    def close(self) -> None:
        for _ in self._slots:
            self._jobs.put(None)
        for slot in self._slots:
            slot.join(timeout=10)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _took(self, job: Job, slot: _Slot | None = None) -> None:
        """A slot took `job` off the queue: to run it (slot) or to drop it (cancelled)."""
        with self._lock:
            self._waiting.remove(job)
            if slot is not None:
                slot.job = job

    def _typical_job_s(self) -> float:
        durations = [slot.last_duration_s for slot in self._slots if slot.last_duration_s]
        return max(durations) if durations else 5.0


class _Slot(threading.Thread):
    """One worker process and the thread in this process that feeds it jobs and watches it."""

    def __init__(self, pool: WorkerPool, index: int):
        super().__init__(name=f"worker-slot-{index}", daemon=True)
        self.pool = pool
        self.process = None
        self.connection = None
        self.job: Job | None = None  # the job running now
        self.last_duration_s: float | None = None
        self._spawn()

    def _spawn(self) -> None:
        parent, child = self.pool._context.Pipe()
        self.process = self.pool._context.Process(
            target=_worker_main, args=(child, self.pool._preload, self.pool.nice), daemon=True, name="brain-xai-worker"
        )
        with _main_module_hidden():
            self.process.start()
        child.close()
        self.connection = parent

    def _replace(self) -> None:
        """Stop the process (a pass in flight cannot be interrupted any other way) and start another."""
        self.process.kill()
        self.process.join(timeout=10)
        self.connection.close()
        self.pool.restarts += 1
        self._spawn()

    def run(self) -> None:
        while True:
            job = self.pool._jobs.get()
            if job is None:
                self.connection.close()
                self.process.kill()
                self.process.join(timeout=10)
                return
            if job.cancelled or job.done():
                self.pool._took(job)
                continue
            self.pool._took(job, self)
            try:
                self._run(job)
            finally:
                self.job = None

    def _run(self, job: Job) -> None:
        job.started = time.monotonic()
        try:
            _send_job(self.connection, job.task, job.args)
        except (OSError, ValueError) as error:  # the process died while idle, or the job cannot be pickled
            self._replace()
            job._fail(WorkerCrashed(f"The job could not be handed to a worker: {error}"))
            return
        finally:
            job.args = ()  # handed over (or failed): an upload is not kept here while the worker runs
        deadline = None if job.time_limit_s is None else job.started + job.time_limit_s
        while True:
            if self.connection.poll(POLL_S):
                try:
                    kind, payload = self.connection.recv()
                except (EOFError, OSError):
                    self._crashed(job)
                    return
                if kind == "progress":
                    job.progress = payload
                    continue
                self.last_duration_s = time.monotonic() - job.started
                if kind == "done":
                    job._succeed(payload)
                else:
                    job._fail(payload)
                return
            if not self.process.is_alive():
                self._crashed(job)
                return
            if job.cancelled:
                self._replace()
                job._fail(JobCancelled("Cancelled."))
                return
            if deadline is not None and time.monotonic() > deadline:
                self._replace()
                job._fail(JobTimedOut(f"Stopped after the {job.time_limit_s:g} s time limit."))
                return

    def _crashed(self, job: Job) -> None:
        code = self.process.exitcode
        self._replace()
        job._fail(
            WorkerCrashed(
                f"The worker stopped while processing this file (exit code {code}). The file may be damaged "
                "or use an encoding the decoder cannot handle; export it again as PNG or uncompressed DICOM."
            )
        )


# Arguments at least this large (an upload) travel as raw bytes beside the pickled job: pickling
# would make a second copy of them in the server while it sends.
RAW_ARGUMENT_BYTES = 2**20


class _RawArgument:
    """Stands in the pickled arguments for one sent raw, in order, after them."""


def _send_job(connection, task: Callable, args: tuple) -> None:
    raw = [isinstance(a, (bytes, bytearray)) and len(a) >= RAW_ARGUMENT_BYTES for a in args]
    connection.send((task, tuple(_RawArgument() if is_raw else a for a, is_raw in zip(args, raw))))
    for argument, is_raw in zip(args, raw):
        if is_raw:
            connection.send_bytes(argument)


def _receive_job(connection) -> tuple[Callable, tuple]:
    task, args = connection.recv()
    return task, tuple(connection.recv_bytes() if isinstance(a, _RawArgument) else a for a in args)


_START_LOCK = threading.Lock()


@contextmanager
def _main_module_hidden():
    """A new worker re-imports the parent's __main__ unless told otherwise; under Streamlit that
    is the page being run (its script runner installs each page as __main__), which must not run
    again in a worker. So the worker is started while __main__ is a blank module."""
    with _START_LOCK:
        real = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = real


def _context():
    """Workers are forked from a server process that has imported torch and the explainers
    (a fresh interpreter takes 5-15 s to import them) but started no threads, so that a worker
    replaced after a cancel is ready in well under a second."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["core.explain", "core.image_input"])
    return context


# In the worker process: models by folder, loaded once.
_MODELS: dict = {}


def worker_model(directory: str):
    """The worker's replica of the checkpoint in `directory`, reloaded when its files change."""
    from core.checkpoint import checkpoint_stamp, load_checkpoint

    stamp = checkpoint_stamp(directory)
    cached = _MODELS.get(directory)
    if cached is None or cached[0] != stamp:
        _MODELS[directory] = (stamp, load_checkpoint(Path(directory)))
    return _MODELS[directory][1]


def _worker_main(connection, preload: list[str], nice: int = 0) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if nice:
        os.nice(nice)
    import torch

    torch.set_num_threads(1)
    for directory in preload:
        try:
            worker_model(directory)
        except Exception:  # a damaged checkpoint is reported when a job asks for it
            pass

    def report(done: int, total: int) -> None:
        connection.send(("progress", (done, total)))

    while True:
        try:
            task, args = _receive_job(connection)
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            message = ("done", task(*args, report=report))
        except Exception as error:  # sent back to the caller, who raises it
            message = ("error", error)
        try:
            connection.send(message)
        except Exception as error:  # an unpicklable result or exception
            connection.send(("error", RuntimeError(f"{type(error).__name__}: {error}")))
        del task, args, message  # the upload too: it would stay alive until the next job
        _return_freed_memory()


def _return_freed_memory() -> None:
    """Give the memory a job freed back to the system: glibc keeps it otherwise, and a worker
    that once ran a Score-CAM would hold its peak (~0.4-1 GB more) from then on."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# Tasks: module-level, so a spawned worker can unpickle them; each takes `report`.


def explain_task(directory: str, pixels, settings, report: Callable[[int, int], None]):
    """explain() with the worker's replica, reporting progress per forward pass."""
    from core.explain import explain

    return explain(worker_model(directory), pixels, settings, on_progress=report)


def decode_and_explain_task(
    directory: str,
    data: bytes,
    filename: str,
    settings,
    slice_index: int | None = None,
    axis: int = 2,
    *,
    report: Callable[[int, int], None],
):
    """(the decoded LoadedImage, its Explanation) for slice `slice_index` along `axis` (as
    load_image takes them): decoding in the worker, so that a decoder that aborts the process on
    a hostile file takes one worker with it, not the server."""
    from core.explain import explain
    from core.image_input import load_image

    image = load_image(data, filename, slice_index=slice_index, axis=axis)
    return image, explain(worker_model(directory), image.pixels, settings, on_progress=report)
