"""HTTP API: POST /predict returns the prediction with URLs of its heatmap and overlay PNGs.

Each request is decoded and explained in a bounded pool of worker processes (core.workers),
each with its own model replicas; slow methods have their own pool, at a lower CPU priority, so
a Score-CAM takes no worker from the fast requests. A full queue answers 503 with Retry-After,
a request past its time limit 504, and a request whose client has gone is cancelled. The slice
and heatmap are kept in memory only (bounded in number, bytes and age) and turned into PNGs
when fetched; nothing is written to disk.
Run: python -m core serve --host 127.0.0.1 --port 8000 (OpenAPI docs at /docs).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from enum import Enum

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.formparsers import MultiPartParser

from core.config import CheckpointError, list_checkpoints, preferred_checkpoint, read_config
from core.config import resolve_checkpoint as resolve
from core.explanation import METHODS, ExplainError, ExplainSettings
from core.image_input import (
    MAX_FILE_BYTES,
    MAX_VOLUME_FILE_BYTES,
    PLANE_AXES,
    ImageInputError,
    oversize_message,
    upload_kind,
)
from core.render import explanation_panels, png_bytes
from core.workers import (
    SLOW_NICE,
    SLOW_QUEUE_LIMIT,
    JobCancelled,
    JobTimedOut,
    PoolBusy,
    WorkerCrashed,
    WorkerPool,
    decode_and_explain_task,
)

TIME_LIMIT_S = 300.0  # per request; Score-CAM on a 2-core machine under load takes minutes

# The methods as an enum, so the OpenAPI schema lists them and FastAPI validates them.
# "default" is the method the checkpoint's config.json names.
MethodName = Enum("MethodName", {"default": "default", **{name: name for name in METHODS}}, type=str)
Plane = Enum("Plane", {name: name for name in PLANE_AXES}, type=str)


class ImageStore:
    """Each result's slice and heatmap as uint8 (PNG-encoded only when fetched), keyed by id;
    dropped when older than `ttl_s`, or oldest first beyond `capacity` items or `max_bytes`."""

    def __init__(self, capacity: int = 256, ttl_s: float = 600.0, max_bytes: int = 64 * 2**20):
        self.capacity, self.ttl_s, self.max_bytes = capacity, ttl_s, max_bytes
        self._items: OrderedDict[str, tuple[float, np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, image: np.ndarray, heatmap: np.ndarray) -> str:
        """Keep a slice and its heatmap (float in [0, 1]) at the precision the PNGs use."""
        grey = np.uint8(np.round(np.clip(image, 0, 1) * 255))
        heat = np.uint8(255 * np.clip(heatmap, 0, 1))
        key = uuid.uuid4().hex
        with self._lock:
            self._expire()
            self._items[key] = (time.monotonic(), grey, heat)
            self._bytes += grey.nbytes + heat.nbytes
            while len(self._items) > self.capacity or (self._bytes > self.max_bytes and len(self._items) > 1):
                self._drop_oldest()
        return key

    def get(self, key: str, kind: str) -> bytes | None:
        """The PNG of `kind` (heatmap or overlay), or None when expired or unknown."""
        with self._lock:
            self._expire()
            entry = self._items.get(key)
        if entry is None or kind not in ("heatmap", "overlay"):
            return None
        # Back to floats that the renderer maps to the same uint8 values (+0.5: it truncates the heatmap).
        panels = explanation_panels(entry[1] / np.float32(255), (entry[2] + np.float32(0.5)) / np.float32(255))
        return png_bytes(getattr(panels, kind))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _drop_oldest(self) -> None:
        _, grey, heat = self._items.popitem(last=False)[1]
        self._bytes -= grey.nbytes + heat.nbytes

    def _expire(self) -> None:
        now = time.monotonic()
        while self._items and now - next(iter(self._items.values()))[0] > self.ttl_s:
            self._drop_oldest()


# Request bodies larger than this are refused while they arrive (an upload plus the form's
# framing); below it, Starlette keeps an uploaded file in memory (its spool rolls over to a
# temporary file only past spool_max_size, set above this cap), so no upload touches the disk.
MAX_BODY_BYTES = MAX_VOLUME_FILE_BYTES + 2**20
MultiPartParser.spool_max_size = MAX_BODY_BYTES + 1


class BodyTooLarge(Exception):
    pass


class LimitBody:
    """ASGI middleware: 413 as soon as a request body passes MAX_BODY_BYTES, declared or streamed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return await _too_large(send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await _too_large(send)


async def _too_large(send) -> None:
    limits = f"{MAX_VOLUME_FILE_BYTES // 2**20} MB ({MAX_FILE_BYTES // 2**20} MB for a single image)"
    body = json.dumps({"error": f"The upload is over the {limits} limit."}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def _upload_bytes(file: UploadFile) -> bytes:
    """The uploaded file's bytes (LimitBody has already capped them), without a second copy where
    possible: an in-memory upload's buffer is taken over (BytesIO.getvalue() hands over its buffer
    when nothing else holds it), so a 200 MB upload does not briefly take 400 MB."""
    buffer = getattr(file.file, "_file", None)  # the in-memory spool of Starlette's upload
    data = buffer.getvalue() if isinstance(buffer, io.BytesIO) else await file.read()
    await file.close()
    return data


def _usable_checkpoints() -> list:
    usable = []
    for name in list_checkpoints()[:4]:
        folder = resolve(name)
        try:
            read_config(folder)
        except CheckpointError:  # answered with its reason when asked for
            continue
        usable.append(folder)
    return usable


def create_app(
    store: ImageStore | None = None,
    workers: int = 2,
    queue_limit: int = 8,
    time_limit_s: float = TIME_LIMIT_S,
    slow_workers: int = 1,
    slow_queue_limit: int = SLOW_QUEUE_LIMIT,
) -> FastAPI:
    """The FastAPI application (a factory, so tests get a fresh store and pools).

    Args:
        workers: worker processes for the fast methods, each with its own model replicas and one
            torch thread.
        queue_limit: fast requests that may wait for a worker before the API answers 503.
        time_limit_s: a request still running after this is stopped (504).
        slow_workers, slow_queue_limit: the same for the slow methods (Score-CAM, the noise
            tunnel), whose workers run at a lower CPU priority and load a model when first asked.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The fast workers load the installed models as they start, so no request waits for it.
        app.state.pool = WorkerPool(workers, queue_limit, time_limit_s, preload=_usable_checkpoints())
        app.state.slow_pool = WorkerPool(slow_workers, slow_queue_limit, time_limit_s, nice=SLOW_NICE)
        try:
            yield
        finally:
            app.state.pool.close()
            app.state.slow_pool.close()

    app = FastAPI(
        title="Brain-MRI explainability API",
        description="Class prediction and Grad-CAM heatmaps for brain-MRI slices. Not a medical device.",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(LimitBody)
    app.state.store = store or ImageStore()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "models": list_checkpoints()}

    @app.get("/models")
    def models() -> list[dict]:
        """Every installed checkpoint; a damaged one is listed as unusable, with the reason."""
        entries = []
        for name in list_checkpoints():
            try:
                config = read_config(resolve(name))
            except CheckpointError as error:
                entries.append({"name": name, "usable": False, "reason": str(error)})
                continue
            entries.append(
                {
                    "name": name,
                    "usable": True,
                    "architecture": config.architecture,
                    "label_names": list(config.label_names),
                    "default_method": config.default_method,
                    "default_target_layer": config.default_target_layer,
                    "metrics": config.metrics,
                }
            )
        return entries

    @app.post("/predict")
    async def predict(
        request: Request,
        file: UploadFile = File(..., description="PNG, JPEG, BMP, TIFF, DICOM or NIfTI"),
        checkpoint: str | None = Query(None, description="checkpoint name; default the most accurate installed"),
        method: MethodName = Query(MethodName["default"], description="default: the checkpoint's own"),
        target: str | None = Query(None, description="class to explain; default the predicted one"),
        brain_mask: bool = Query(True),
        slice_index: int | None = Query(
            None,
            alias="slice",
            ge=0,
            description="slice of a NIfTI volume or ZIP series, frame of a DICOM or page of a TIFF, counted from 0; "
            "default the middle one",
        ),
        plane: Plane = Query(Plane["axial"], description="the plane a NIfTI volume is sliced in"),
    ) -> dict:
        name = file.filename or "upload"
        data = await _upload_bytes(file)
        kind = upload_kind(name, data)
        if data and kind is None:
            raise HTTPException(
                415, f"'{name}' is not a supported format: PNG, JPEG, BMP, TIFF, DICOM, NIfTI or a ZIP of a series."
            )
        if kind and (message := oversize_message(kind, len(data))):
            raise HTTPException(413, message)
        installed = list_checkpoints()
        checkpoint = checkpoint or (installed[preferred_checkpoint(installed)] if installed else None)
        if checkpoint not in installed:
            raise HTTPException(404, f"No checkpoint '{checkpoint}'. Installed: {', '.join(installed) or 'none'}.")
        try:
            folder = resolve(checkpoint)
            read_config(folder)  # a damaged checkpoint is answered here, before a worker is taken
            chosen = None if method.value == "default" else method.value
            settings = ExplainSettings(chosen, target, None, brain_mask, brain_mask)
            pool = app.state.slow_pool if settings.slow else app.state.pool
            job = pool.submit(decode_and_explain_task, str(folder), data, name, settings, slice_index,
                              PLANE_AXES[plane.value])  # fmt: skip
        except ExplainError as error:
            raise HTTPException(422, str(error)) from error
        except CheckpointError as error:
            raise HTTPException(503, str(error)) from error
        except PoolBusy as error:
            raise HTTPException(503, str(error), headers={"Retry-After": str(error.retry_after_s)}) from error
        image, result = await _outcome(job, request)
        key = app.state.store.put(image.pixels, result.heatmap)
        summary = result.summary()
        return {
            "checkpoint": checkpoint,
            "prediction": summary["prediction"],
            "confidence": summary["confidence"],
            "class_probabilities": summary["probabilities"],
            "target_class": summary["target_class"],
            "method": result.method,
            "target_layer": result.target_layer,
            "brain_masked": summary["brain_masked"],
            "warning": summary["warning"],
            "familiarity": summary["familiarity"],
            "unfamiliar": summary["unfamiliar"],
            "unusual": summary["unusual"],
            "uncertain": summary["uncertain"],
            "uncertain_reason": summary["uncertain_reason"],
            "image_notes": list(image.notes),
            "slice": image.slice_index,
            "num_slices": image.num_slices,
            "timings_ms": summary["timings_ms"],
            "heatmap_url": str(request.url_for("picture", key=key, kind="heatmap")),
            "overlay_url": str(request.url_for("picture", key=key, kind="overlay")),
            "urls_expire_after_s": app.state.store.ttl_s,
        }

    @app.get("/results/{key}/{kind}.png", name="picture", response_class=Response)
    def picture(key: str, kind: str) -> Response:
        data = app.state.store.get(key, kind)
        if data is None:
            raise HTTPException(404, "This image has expired or never existed; post the scan again.")
        return Response(data, media_type="image/png")

    @app.exception_handler(HTTPException)
    def as_json(_request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        """The documented error shape for bad parameters too (FastAPI's own is {"detail": [...]})."""
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'] if part != 'query')}: {issue['msg']}"
            for issue in error.errors()
        )
        return JSONResponse({"error": f"Bad request: {problems}."}, status_code=422)

    return app


async def _outcome(job, request: Request):
    """The job's result, or the HTTP error that says what happened; cancelled if the client goes."""
    waiting = asyncio.wrap_future(job.future)
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=0.25)
        if done:
            break
        if await request.is_disconnected():
            job.cancel()
            raise HTTPException(499, "The client closed the connection; the request was cancelled.")
    try:
        return waiting.result()
    except (ImageInputError, ExplainError) as error:
        raise HTTPException(422, str(error)) from error
    except CheckpointError as error:
        raise HTTPException(503, str(error)) from error
    except JobTimedOut as error:
        raise HTTPException(504, f"{error} Try a faster method (the checkpoint's default).") from error
    except (WorkerCrashed, JobCancelled) as error:
        raise HTTPException(422, str(error)) from error
