"""HTTP API: POST /predict returns the prediction with URLs of its heatmap and overlay PNGs.

The PNGs live in memory only, bounded in number and age; nothing is written to disk.
Run: python -m core serve --host 127.0.0.1 --port 8000 (OpenAPI docs at /docs).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from enum import Enum
from functools import lru_cache

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.formparsers import MultiPartParser

from core.checkpoint import CheckpointError, LoadedModel, list_checkpoints, load_checkpoint, read_config
from core.checkpoint import resolve_checkpoint as resolve
from core.explain import METHODS, ExplainError, ExplainSettings, explain
from core.image_input import MAX_FILE_BYTES, SUPPORTED_SUFFIXES, ImageInputError, load_image
from core.model_card import preferred_checkpoint
from core.render import explanation_panels, png_bytes

# The methods as an enum, so the OpenAPI schema lists them and FastAPI validates them.
# "default" is the method the checkpoint's config.json names.
MethodName = Enum("MethodName", {"default": "default", **{name: name for name in METHODS}}, type=str)


class ImageStore:
    """In-memory PNGs keyed by id, dropped when older than `ttl_s` or beyond `capacity`."""

    def __init__(self, capacity: int = 256, ttl_s: float = 600.0):
        self.capacity, self.ttl_s = capacity, ttl_s
        self._items: OrderedDict[str, tuple[float, dict[str, bytes]]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, pictures: dict[str, bytes]) -> str:
        key = uuid.uuid4().hex
        with self._lock:
            self._expire()
            self._items[key] = (time.monotonic(), pictures)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return key

    def get(self, key: str, kind: str) -> bytes | None:
        with self._lock:
            self._expire()
            entry = self._items.get(key)
        return entry[1].get(kind) if entry else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._items and now - next(iter(self._items.values()))[0] > self.ttl_s:
            self._items.popitem(last=False)


# Request bodies larger than this are refused while they arrive (an upload plus the form's
# framing); below it, Starlette keeps an uploaded file in memory (its spool rolls over to a
# temporary file only past spool_max_size, set above this cap), so no upload touches the disk.
MAX_BODY_BYTES = MAX_FILE_BYTES + 2**20
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
    body = json.dumps({"error": f"The upload is over the {MAX_FILE_BYTES // 2**20} MB limit."}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def _load_models_at_start(app: FastAPI):
    """Load the installed models once at start-up, so the first request does not wait for it; a
    damaged checkpoint is skipped here and answered with its reason when asked for."""
    for name in list_checkpoints()[:4]:
        try:
            app.state.model(name)
        except CheckpointError:
            continue
    yield


def create_app(store: ImageStore | None = None) -> FastAPI:
    """The FastAPI application (a factory, so tests get a fresh store)."""
    app = FastAPI(
        title="Brain-MRI explainability API",
        description="Class prediction and Grad-CAM heatmaps for brain-MRI slices. Not a medical device.",
        version="1",
        lifespan=_load_models_at_start,
    )
    app.add_middleware(LimitBody)
    app.state.store = store or ImageStore()

    @lru_cache(maxsize=4)
    def model(name: str) -> LoadedModel:
        return load_checkpoint(name)

    app.state.model = model

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
    def predict(
        request: Request,
        file: UploadFile = File(..., description="PNG, JPEG, BMP, TIFF, DICOM or NIfTI"),
        checkpoint: str | None = Query(None, description="checkpoint name; default the most accurate installed"),
        method: MethodName = Query(MethodName["default"], description="default: the checkpoint's own"),
        target: str | None = Query(None, description="class to explain; default the predicted one"),
        brain_mask: bool = Query(True),
    ) -> dict:
        name = file.filename or "upload"
        if not name.lower().endswith(SUPPORTED_SUFFIXES) and "." in name:
            raise HTTPException(415, f"'{name}' is not a supported format: {', '.join(SUPPORTED_SUFFIXES)}.")
        data = file.file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise HTTPException(413, f"The file is over the {MAX_FILE_BYTES // 2**20} MB limit.")
        installed = list_checkpoints()
        checkpoint = checkpoint or (installed[preferred_checkpoint(installed)] if installed else None)
        if checkpoint not in installed:
            raise HTTPException(404, f"No checkpoint '{checkpoint}'. Installed: {', '.join(installed) or 'none'}.")
        try:
            image = load_image(data, name).pixels
            chosen = None if method.value == "default" else method.value
            settings = ExplainSettings(chosen, target, None, brain_mask, brain_mask)
            result = explain(model(checkpoint), image, settings)
        except (ImageInputError, ExplainError) as error:
            raise HTTPException(422, str(error)) from error
        except CheckpointError as error:
            raise HTTPException(503, str(error)) from error
        pictures = explanation_panels(image, result.heatmap)
        key = app.state.store.put({"heatmap": png_bytes(pictures.heatmap), "overlay": png_bytes(pictures.overlay)})
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
            "uncertain": summary["uncertain"],
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
        return JSONResponse({"error": error.detail}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        """The documented error shape for bad parameters too (FastAPI's own is {"detail": [...]})."""
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'] if part != 'query')}: {issue['msg']}"
            for issue in error.errors()
        )
        return JSONResponse({"error": f"Bad request: {problems}."}, status_code=422)

    return app
