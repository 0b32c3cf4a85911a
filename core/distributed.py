"""The Ray engine: the local engine's unit of work, on a pool of Ray Data actors.

Each actor loads the checkpoint once, runs one torch thread, reads its inputs where it runs
and hands results back as they finish; the caller writes them, so the output folder needs to
exist only where the command runs. Results come back out of order, tagged with their index.
Used by `explain --engine ray` (core.batch) and `evaluate --engine ray` (core.evaluate).
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.checkpoint import LoadedModel, load_checkpoint
from core.errors import EngineError

FILES_PER_CALL = 4  # explain: files per actor call (small, so the pool stays balanced)
REPO_ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def ray_runtime(address: str | None = None, workers: int | None = None):
    """Connect to the cluster at `address`, or start a local runtime with `workers` CPUs
    (default: every core); shut down on exit what this call started."""
    import ray

    started = not ray.is_initialized()
    logging.getLogger("ray").setLevel(logging.ERROR)  # its start-up notes would break the progress bar
    if started:
        paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}}
        options = {"runtime_env": runtime_env, "logging_level": logging.ERROR, "log_to_driver": False}
        try:
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise EngineError(f"Ray did not start{f' at {address}' if address else ''}: {error}") from error
    try:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = context.print_on_execution_start = False  # the caller shows one bar
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        yield ray
    finally:
        if started:
            ray.shutdown()


class _Worker:
    """One actor: the checkpoint loaded once, one torch thread."""

    def __init__(self, checkpoint: str, weights_sha256: str):
        import torch

        torch.set_num_threads(1)
        self.loaded = load_checkpoint(checkpoint)
        if self.loaded.weights_sha256 != weights_sha256:
            raise EngineError(f"The worker's {checkpoint} holds other weights than the caller's; copy it again.")


class _ExplainWorker(_Worker):
    def __init__(self, checkpoint: str, weights_sha256: str, settings, axis: int):
        super().__init__(checkpoint, weights_sha256)
        self.settings, self.axis = settings, axis

    def __call__(self, batch: dict) -> dict:
        from core.batch import explain_file

        results = [
            pickle.dumps(explain_file(self.loaded, Path(path), self.settings, axis=self.axis)) for path in batch["path"]
        ]
        return {"index": batch["index"], "result": results}


class _EvaluateWorker(_Worker):
    def __init__(self, checkpoint: str, weights_sha256: str, root: str, options: dict):
        super().__init__(checkpoint, weights_sha256)
        self.root, self.options = Path(root), options

    def __call__(self, batch: dict) -> dict:
        from core.evaluate import score_chunk

        results = [
            pickle.dumps(score_chunk(self.loaded, self.root, pickle.loads(records), **self.options))
            for records in batch["records"]
        ]
        return {"index": batch["index"], "result": results}


def _stream(ray, items: list[dict], worker: type, arguments: tuple, per_call: int, workers: int | None) -> Iterator:
    size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * size)))
    with warnings.catch_warnings():  # max_restarts has no named parameter yet in the pinned Ray
        warnings.simplefilter("ignore")
        mapped = dataset.map_batches(
            worker,
            fn_constructor_args=arguments,
            batch_size=per_call,
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=1,
            batch_format="numpy",
            max_restarts=0,  # a worker that crashes fails the run, as it would locally
        )
    for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
        for index, result in zip(batch["index"], batch["result"]):
            yield int(index), pickle.loads(result)


def explain_stream(
    loaded: LoadedModel,
    checkpoint: Path,
    files: list[Path],
    settings,
    address: str | None,
    workers: int | None,
    axis: int = 2,
) -> Iterator:
    """(index into `files`, core.batch.ExplainedFile) for every file, as actors finish them;
    NIfTI volumes sliced along `axis`."""
    if not files:
        return
    items = [{"index": index, "path": str(path)} for index, path in enumerate(files)]
    with ray_runtime(address, workers) as ray:
        arguments = (str(checkpoint), loaded.weights_sha256, settings, axis)
        yield from _stream(ray, items, _ExplainWorker, arguments, FILES_PER_CALL, workers)


def evaluate_stream(
    loaded: LoadedModel,
    checkpoint: Path,
    root: Path,
    chunks: list,
    options: dict,
    address: str | None,
    workers: int | None,
) -> Iterator:
    """(index into `chunks`, the chunk's scores) for every chunk of records, as actors finish them."""
    if not chunks:
        return
    items = [{"index": index, "records": pickle.dumps(chunk)} for index, chunk in enumerate(chunks)]
    with ray_runtime(address, workers) as ray:
        arguments = (str(checkpoint), loaded.weights_sha256, str(root), options)
        yield from _stream(ray, items, _EvaluateWorker, arguments, 1, workers)
