"""Real HTTP against `backdrop serve` (uvicorn in a subprocess, official U²-NetP weights)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from .conftest import TOKEN, jpeg_bytes

pytestmark = pytest.mark.slow  # every test talks to `backdrop serve` (uvicorn) in a subprocess

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _error(resp, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"]["code"] == code and body["error"]["message"], body


def test_bad_uploads_get_clear_4xx_and_the_server_stays_up(server):
    c = server.client
    good = jpeg_bytes()
    cases = [
        ("bomb.png", png_header(20_000, 20_000), 413, "too_large"),
        ("cut.jpg", good[: len(good) // 2], 400, "corrupt_file"),
        ("notes.txt", b"this is not a photo\n" * 20, 415, "not_an_image"),
        ("empty.jpg", b"", 400, "empty_file"),
    ]
    for name, data, status, code in cases:
        # multipart upload (declared type image/jpeg: the bytes decide, not the header)
        r = c.post("/v1/remove", files={"file": (name, data, "image/jpeg")}, headers=AUTH)
        _error(r, status, code)
        # raw body
        r = c.post("/v1/remove", content=data, headers={**AUTH, "Content-Type": "image/jpeg"})
        _error(r, status, code)
        assert server.alive() and c.get("/healthz").json()["status"] == "ok"
    # more bytes than serve.max_upload_bytes (2 MB in this project): refused before decoding
    _error(c.post("/v1/remove", content=b"\xff\xd8\xff" + b"\0" * 2_100_000, headers=AUTH), 413, "too_large")
    # bad query value and missing token
    _error(c.post("/v1/remove?format=gif", content=good, headers=AUTH), 422, "invalid_request")
    _error(c.post("/v1/remove", content=good), 401, "unauthorized")
    assert server.alive()
    metrics = c.get("/metrics").text
    assert 'backdrop_rejected_uploads_total{code="too_large"}' in metrics
    assert 'backdrop_rejected_uploads_total{code="not_an_image"}' in metrics


def test_good_jpeg_gives_rgba_png_of_the_original_size(server):
    data = jpeg_bytes((333, 444), seed=3)
    size = Image.open(io.BytesIO(data)).size
    r = server.client.post("/v1/remove", files={"file": ("shirt.jpg", data, "image/jpeg")}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    out = Image.open(io.BytesIO(r.content))
    assert out.mode == "RGBA" and out.size == size
    alpha = np.asarray(out)[..., 3]
    assert 0.05 < (alpha > 127).mean() < 0.95  # a product was found, not everything or nothing
    assert 0.0 <= float(r.headers["X-Backdrop-Confidence"]) <= 1.0
    assert r.headers["X-Backdrop-Review"] in ("published", "queued")
    # the mask format is that alpha channel; white is a JPEG of the same size
    m = server.client.post("/v1/remove?format=mask", content=data, headers=AUTH)
    mask = Image.open(io.BytesIO(m.content))
    assert mask.mode == "L" and mask.size == size
    assert np.abs(np.asarray(mask).astype(int) - alpha).max() <= 1
    w = server.client.post("/v1/remove?format=white", content=data, headers=AUTH)
    white = Image.open(io.BytesIO(w.content))
    assert w.headers["content-type"] == "image/jpeg" and white.format == "JPEG"
    # params.yaml: white_aspect "1:1", white_margin 0.05 → a square canvas around the product, white border
    ys, xs = np.nonzero(alpha > 8)
    side = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) / 0.9  # the box plus 5 % on each side
    assert white.width == white.height and abs(white.width - side) <= 2
    border = np.asarray(white.convert("L"))[:3]
    assert border.min() >= 245


def test_batch_mixes_results_and_errors(server):
    files = [("files", ("a.jpg", jpeg_bytes((256, 320), seed=4), "image/jpeg")),
             ("files", ("b.txt", b"hello", "text/plain")),
             ("files", ("c.jpg", jpeg_bytes((288, 256), seed=5), "image/jpeg"))]
    r = server.client.post("/v1/remove/batch?format=mask", files=files, headers=AUTH)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["ok"] for x in results] == [True, False, True]
    assert results[1]["error"]["code"] == "not_an_image" and results[1]["error"]["status"] == 415
    img = Image.open(io.BytesIO(base64.b64decode(results[0]["data_base64"])))
    assert img.mode == "L" and img.size == (results[0]["width"], results[0]["height"])


def test_health_metrics_and_docs(server):
    c = server.client
    health = c.get("/healthz").json()
    assert health["model"]["source"] == "official:u2netp" and health["model"]["size"] == 320
    spec = c.get("/openapi.json").json()
    assert {"/v1/remove", "/v1/remove/batch", "/healthz", "/metrics"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/remove"]["post"]["requestBody"]["content"]
    assert c.get("/docs").status_code == 200
    text = c.get("/metrics").text
    assert "backdrop_http_request_seconds_bucket" in text and "backdrop_inference_seconds_count" in text


def test_cutouts_reach_the_prediction_log(server, api_project):
    import sqlite3
    import time

    db = api_project / "monitoring" / "monitoring.db"
    deadline = time.monotonic() + 60
    n = 0
    while time.monotonic() < deadline:  # written by a background task after each response
        if db.exists():
            with sqlite3.connect(db) as con:
                n = con.execute("SELECT count(*) FROM predictions WHERE model_uri='official:u2netp'").fetchone()[0]
            if n >= 5:
                break
        time.sleep(0.5)
    assert n >= 5, "".join(server.lines[-40:])  # 3 single cut-outs + 2 good photos of the batch
    assert not any("prediction log write failed" in line for line in server.lines)


def test_each_remove_request_adds_its_row_to_the_prediction_log(server, api_project):
    import hashlib
    import sqlite3
    import time

    data = jpeg_bytes((300, 360), seed=8, index=3)  # a photo no other test sends
    sha = hashlib.sha256(data).hexdigest()
    db = api_project / "monitoring" / "monitoring.db"

    def rows() -> list[tuple]:
        if not db.exists():
            return []
        with sqlite3.connect(db) as con:
            return con.execute("SELECT model_uri, width, height, confidence, mask_path FROM predictions "
                               "WHERE image_sha256 = ?", (sha,)).fetchall()

    assert rows() == []
    r = server.client.post("/v1/remove", files={"file": ("logged.jpg", data, "image/jpeg")}, headers=AUTH)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while not rows() and time.monotonic() < deadline:  # written by a background task after the response
        time.sleep(0.25)
    found = rows()
    assert len(found) == 1, "".join(server.lines[-40:])
    model_uri, width, height, conf, mask_path = found[0]
    assert model_uri == "official:u2netp" and f"{width}x{height}" == r.headers["X-Backdrop-Size"]
    assert 0.0 < conf <= 1.0
    stored = np.asarray(Image.open(api_project / "monitoring" / "store" / mask_path))
    alpha = np.asarray(Image.open(io.BytesIO(r.content)))[..., 3]
    assert np.array_equal(stored, alpha)  # the logged mask is exactly the published alpha
