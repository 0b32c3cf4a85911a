from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.image_input import MAX_FILE_BYTES, MAX_VOLUME_FILE_BYTES
from core.render import explanation_panels, png_bytes
from core.service import ImageStore, create_app
from core.workers import SLOW_NICE
from tests.conftest import encode, head_phantom


@pytest.fixture(scope="module")
def client(checkpoint_root):
    """One app (and so one pool of worker processes, which take seconds to start) per module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BRAIN_XAI_CHECKPOINTS", str(checkpoint_root))
        with TestClient(create_app(ImageStore(capacity=100, ttl_s=60))) as client:
            yield client


def post(client, name: str, data: bytes, **params):
    return client.post("/predict", files={"file": (name, data, "application/octet-stream")}, params=params)


def test_predict_returns_prediction_and_working_urls(client):
    response = post(client, "scan.png", encode(head_phantom(128), "PNG"), checkpoint="tiny_effnet", method="HiResCAM")
    assert response.status_code == 200
    body = response.json()
    assert body["prediction"] in body["class_probabilities"]
    assert body["confidence"] == max(body["class_probabilities"].values())
    assert body["method"] == "HiResCAM" and body["brain_masked"] is True
    assert body["familiarity"] is None and body["unusual"] == []  # the tiny checkpoint has no familiarity model
    assert ("no fitted margin)" in body["uncertain_reason"]) == body["uncertain"]
    for key in ("heatmap_url", "overlay_url"):
        picture = client.get(body[key])
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
        assert picture.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_target_and_mask_options(client):
    body = post(client, "scan.png", encode(head_phantom(96), "PNG"), target="notumor", brain_mask="false").json()
    assert body["target_class"] == "notumor" and body["brain_masked"] is False
    assert body["checkpoint"] == "tiny_convnext"  # first installed by default


def test_a_dicom_named_by_its_uid_without_preamble_is_answered(client):
    from pydicom.data import get_testdata_file

    data = open(get_testdata_file("MR_small.dcm"), "rb").read()[132:]
    response = post(client, "1.2.840.113619.2.55.3", data)
    assert response.status_code == 200, response.json()
    assert response.json()["prediction"] in response.json()["class_probabilities"]
    assert response.json()["image_notes"] == ["Window centre 600, width 1600 from the file."]


def test_a_dose_grid_smaller_than_a_slice_is_answered_with_a_note_saying_so(client):
    from pydicom.data import get_testdata_file

    response = post(client, "rtdose.dcm", open(get_testdata_file("rtdose.dcm"), "rb").read())
    assert response.status_code == 200, response.json()
    assert "only 10x10 pixels" in response.json()["image_notes"][0]
    assert client.get(response.json()["overlay_url"]).status_code == 200


@pytest.mark.parametrize(
    "name, data, params, status, message",
    [
        ("notes.txt", b"hello", {}, 415, "not a supported format"),
        ("big.png", b"\0" * (MAX_FILE_BYTES + 1), {}, 413, "50 MB"),
        ("broken.png", b"\x89PNG\r\n\x1a\n\0\0", {}, 422, "not a readable PNG image"),
        ("empty.dcm", b"", {}, 422, "empty"),
        ("flat.png", encode(head_phantom(64) * 0 + 0.5, "PNG"), {}, 422, "same value"),
        ("scan.png", encode(head_phantom(64), "PNG"), {"target": "astrocytoma"}, 422, "Unknown class"),
        ("scan.png", encode(head_phantom(64), "PNG"), {"checkpoint": "nope"}, 404, "No checkpoint"),
    ],
)
def test_errors_are_json_with_the_right_status(client, name, data, params, status, message):
    response = post(client, name, data, **params)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_unknown_method_and_missing_file_are_422(client):
    assert post(client, "scan.png", encode(head_phantom(64), "PNG"), method="Magic").status_code == 422
    assert client.post("/predict").status_code == 422


def test_expired_or_unknown_result_is_404(client):
    response = client.get("/results/0123/heatmap.png")
    assert response.status_code == 404 and "expired" in response.json()["error"]


def test_store_is_bounded_in_number_bytes_and_age(phantom):
    store = ImageStore(capacity=2, ttl_s=60)
    keys = [store.put(phantom, phantom) for _ in range(3)]
    assert len(store) == 2 and store.get(keys[0], "heatmap") is None and store.get(keys[2], "heatmap") is not None
    by_bytes = ImageStore(capacity=100, ttl_s=60, max_bytes=3 * 2 * phantom.size)  # room for three
    for _ in range(5):
        by_bytes.put(phantom, phantom)
    assert len(by_bytes) == 3
    old = ImageStore(capacity=5, ttl_s=0.0)
    key = old.put(phantom, phantom)
    assert old.get(key, "heatmap") is None


def test_pngs_made_when_fetched_are_the_eager_ones(phantom):
    """The store keeps uint8 slices and heatmaps; the PNGs it encodes on request must be
    byte-identical to rendering the float explanation at once."""
    heatmap = np.random.default_rng(1).random(phantom.shape).astype(np.float32)
    heatmap[0, :4] = [0.0, 1.0, 13 / 255, 0.99999]  # the ends and values at the renderer's truncation edges
    store = ImageStore()
    key = store.put(phantom, heatmap)
    eager = explanation_panels(phantom, heatmap)
    assert store.get(key, "heatmap") == png_bytes(eager.heatmap)
    assert store.get(key, "overlay") == png_bytes(eager.overlay)
    assert store.get(key, "original") is None


def test_models_health_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok", "models": ["tiny_convnext", "tiny_effnet"]}
    models = client.get("/models").json()
    assert [m["name"] for m in models] == ["tiny_convnext", "tiny_effnet"]
    assert models[0]["label_names"] == ["glioma", "meningioma", "notumor", "pituitary"]
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/models", "/health"} <= set(schema["paths"])


def test_fifty_requests_from_eight_threads(client):
    images = {seed: encode(head_phantom(96, seed), "PNG") for seed in range(5)}
    serial = {seed: post(client, "s.png", data).json()["class_probabilities"] for seed, data in images.items()}

    def call(i: int):
        return i % 5, post(client, f"s{i}.png", images[i % 5])

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, range(50)))
    for seed, response in answers:
        assert response.status_code == 200
        body = response.json()
        assert body["class_probabilities"] == pytest.approx(serial[seed], abs=1e-5)
        assert client.get(body["overlay_url"]).status_code == 200


def test_a_damaged_checkpoint_is_listed_as_unusable_not_a_500(checkpoint_root, tmp_path, monkeypatch):
    import shutil

    from fastapi.testclient import TestClient

    from core.service import create_app

    root = tmp_path / "checkpoints"
    shutil.copytree(checkpoint_root, root)
    (root / "tiny_effnet" / "config.json").write_text('{"schema_version": 1, "temperature": -1}')
    monkeypatch.setenv("BRAIN_XAI_CHECKPOINTS", str(root))
    entries = {entry["name"]: entry for entry in TestClient(create_app()).get("/models").json()}
    assert entries["tiny_convnext"]["usable"] and entries["tiny_convnext"]["default_method"] == "Grad-CAM"
    assert not entries["tiny_effnet"]["usable"] and "'temperature'" in entries["tiny_effnet"]["reason"]


def test_bad_parameters_answer_in_the_documented_error_shape(client):
    response = post(client, "scan.png", encode(head_phantom(64), "PNG"), method="Magic")
    assert response.status_code == 422 and "method" in response.json()["error"]
    assert "error" in client.post("/predict").json()


def test_an_upload_over_one_megabyte_stays_in_memory(client, monkeypatch):
    """Starlette spools uploads over 1 MB to a temporary file unless told otherwise. On Linux that
    file has no name (O_TMPFILE), so the test watches the spool's rollover instead of a folder."""
    import tempfile

    rolled_over = []
    real = tempfile.TemporaryFile

    def recording(*args, **kwargs):
        rolled_over.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)
    noise = np.random.default_rng(0).integers(0, 65535, (1200, 1200), dtype=np.uint16)
    data = encode(Image.fromarray(noise), "PNG")
    assert len(data) > 2 * 2**20
    response = post(client, "big.png", data)
    assert response.status_code == 200, response.text
    assert not rolled_over, "an upload was written to a temporary file"


def test_an_upload_over_the_limit_is_refused_while_it_arrives(client):
    response = post(client, "huge.nii", b"\0" * (MAX_VOLUME_FILE_BYTES + 2 * 2**20))
    assert response.status_code == 413 and "200 MB" in response.json()["error"]


def test_a_volume_over_the_single_image_limit_is_explained_as_in_the_app(client):
    """The app takes DICOM, NIfTI and ZIP series up to 200 MB; the API refused them over 50 MB."""
    import nibabel

    slices = 60 * 2**20 // (256 * 256 * 2) + 1
    head = np.uint16(head_phantom(256) * 1000)
    volume = np.repeat(head[:, :, None], slices, axis=2)
    data = nibabel.Nifti1Image(volume, np.eye(4)).to_bytes()
    assert MAX_FILE_BYTES < len(data) < MAX_VOLUME_FILE_BYTES
    response = post(client, "series.nii", data, checkpoint="tiny_effnet")
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] in response.json()["class_probabilities"]


def test_a_volume_is_explained_at_the_slice_and_plane_asked_for(client):
    """Like the app's slider and orientation: `slice` counted from 0 (default the middle one),
    `plane` for NIfTI; the answer says which slice of how many it explained."""
    import nibabel

    volume = np.zeros((64, 64, 12), dtype=np.float32)
    for k in range(12):
        volume[8:56, 8:56, k] = 100 + k  # each axial slice its own brightness
    data = nibabel.Nifti1Image(volume, np.diag([1.0, 1.0, 4.0, 1.0])).to_bytes()
    middle = post(client, "head.nii", data).json()
    assert (middle["slice"], middle["num_slices"]) == (6, 12) and middle["image_notes"] == []
    chosen = post(client, "head.nii", data, slice=3).json()
    assert (chosen["slice"], chosen["num_slices"]) == (3, 12)
    coronal = post(client, "head.nii", data, plane="coronal", slice=40).json()
    assert (coronal["slice"], coronal["num_slices"]) == (40, 64)
    assert any("4 mm tall and 1 mm wide" in note for note in coronal["image_notes"])
    beyond = post(client, "head.nii", data, slice=12)
    assert beyond.status_code == 422 and "slice" in beyond.json()["error"]
    assert post(client, "head.nii", data, plane="oblique").status_code == 422
    assert post(client, "head.nii", data, slice=-1).status_code == 422


def test_a_volume_just_over_its_limit_is_refused_with_413_not_read_as_empty(client):
    """Within the body cap (the file plus 1 MB of form framing) but over the file limit."""
    response = post(client, "series.nii", b"\0" * (MAX_VOLUME_FILE_BYTES + 2**17))
    assert response.status_code == 413 and "limit is 200 MB" in response.json()["error"]


def test_a_single_image_keeps_its_own_limit(client):
    response = post(client, "big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_FILE_BYTES)
    assert response.status_code == 413 and "50 MB" in response.json()["error"]


def loaded_models_task(report):
    from core import workers

    return sorted(Path(directory).name for directory in workers._MODELS)


def test_models_are_loaded_at_start_up(client):
    """Every worker loads the installed checkpoints as it starts, before any request."""
    pool = client.app.state.pool
    assert [pool.run(loaded_models_task) for _ in range(2)] == [["tiny_convnext", "tiny_effnet"]] * 2


def sleep_task(seconds: float, report):
    time.sleep(seconds)
    return seconds


def test_a_full_queue_answers_503_with_retry_after(use_tiny_checkpoints):
    with TestClient(create_app(workers=1, queue_limit=0)) as client:
        busy = client.app.state.pool.submit(sleep_task, 30)
        while busy.started is None:
            time.sleep(0.01)
        response = post(client, "scan.png", encode(head_phantom(64), "PNG"))
        busy.cancel()
    assert response.status_code == 503 and "busy" in response.json()["error"]
    assert int(response.headers["Retry-After"]) >= 1


def test_a_slow_method_takes_no_worker_from_the_fast_ones(use_tiny_checkpoints):
    with TestClient(create_app(workers=1, queue_limit=0, slow_queue_limit=0)) as client:
        busy = client.app.state.slow_pool.submit(sleep_task, 30)  # the one slow worker is taken
        while busy.started is None:
            time.sleep(0.01)
        scan = encode(head_phantom(96), "PNG")
        slow = post(client, "scan.png", scan, checkpoint="tiny_effnet", method="Score-CAM")
        fast = post(client, "scan.png", scan, checkpoint="tiny_effnet", method="Grad-CAM")
        niceness = [os.getpriority(os.PRIO_PROCESS, pid) for pid in client.app.state.slow_pool.pids()]
        busy.cancel()
    assert slow.status_code == 503 and "busy" in slow.json()["error"]
    assert fast.status_code == 200 and fast.json()["method"] == "Grad-CAM"
    assert niceness == [os.getpriority(os.PRIO_PROCESS, 0) + SLOW_NICE]  # it yields the CPU to them


def test_a_request_past_its_time_limit_answers_504(use_tiny_checkpoints):
    with TestClient(create_app(workers=1, time_limit_s=0.05)) as client:
        response = post(client, "scan.png", encode(head_phantom(96), "PNG"), checkpoint="tiny_effnet",
                        method="Score-CAM")  # fmt: skip
        pool = client.app.state.slow_pool
        assert pool.restarts == 1  # the worker running it was stopped and replaced
    assert response.status_code == 504 and "time limit" in response.json()["error"]


def test_a_request_whose_client_has_gone_is_cancelled(use_tiny_checkpoints):
    """A real server: the client gives up after 0.5 s of a Score-CAM that takes several; the
    server notices the closed connection and stops the worker running it."""
    import socket

    import httpx
    import uvicorn

    app = create_app(workers=1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"http://127.0.0.1:{port}/predict", params={"checkpoint": "tiny_effnet", "method": "Score-CAM"},
                       files={"file": ("s.png", encode(head_phantom(96), "PNG"))}, timeout=0.5)  # fmt: skip
        deadline = time.monotonic() + 10
        while app.state.slow_pool.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.slow_pool.restarts == 1
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the server's memory map from /proc")
def test_the_server_process_never_loads_torch(use_tiny_checkpoints):
    """Torch and the models live in the worker processes; the server's own process validates,
    queues and answers with the light modules only (about 75 MB instead of 0.9 GB)."""
    import httpx

    from core.load_bench import running_server

    with running_server(workers=1) as (base, pid):
        files = {"file": ("head.png", encode(head_phantom(96), "PNG"), "image/png")}
        answer = httpx.post(f"{base}/predict", files=files, params={"method": "Grad-CAM"}, timeout=120)
        assert answer.status_code == 200 and answer.json()["familiarity"] is None
        assert httpx.get(f"{base}/models", timeout=30).status_code == 200
        loaded = Path(f"/proc/{pid}/maps").read_text()
    assert "libtorch" not in loaded
