"""The HTTP API (issue 22, classes 8, 9, 11 and the invariant), in-process through Starlette's TestClient.

* class 11 — a client file name with a NUL byte, 300 bytes or folders is sanitised; any unhandled error
  is a JSON 500 counted in /metrics;
* class 9 — bytes in flight are bounded per worker: past the budget 503 + Retry-After, Content-Length
  checked before reading, reservations always released;
* class 8 — request line + headers above the cap get 431 (app level here; the real server in
  test_serving_server_limits.py);
* invariant — a batch gives exactly one result (output xor error) per file, nothing written outside
  the review folder.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

MODEL = "official:u2netp"
MAX_UPLOAD = 300_000


def photo_bytes(index: int, fmt: str = "JPEG") -> bytes:
    from backdrop.data.synth import render_item

    photo, _mask, _ = render_item(55, index, min_side=96, max_side=160)
    buf = io.BytesIO()
    photo.save(buf, format=fmt)
    return buf.getvalue()


def make_app(root: Path, threshold: float):
    from backdrop.config import load_params
    from backdrop.serving.api import create_app

    params = load_params()
    serve = params.serve.model_copy(update={"review_threshold": threshold, "review_dir": root / "review",
                                            "max_upload_bytes": MAX_UPLOAD, "max_batch_files": 8, "refresh_s": 0,
                                            "token_env": "BACKDROP_TEST_NO_TOKEN"})
    monitoring = params.monitoring.model_copy(update={"record_predictions": False})
    return create_app(params.model_copy(update={"serve": serve, "monitoring": monitoring}), MODEL)


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """Every cut-out goes to the review queue (so client names reach the file system)."""
    root = tmp_path_factory.mktemp("api-routed")
    with TestClient(make_app(root, 1.01), raise_server_exceptions=False) as client:
        client.root = root
        yield client


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-published")
    with TestClient(make_app(root, 0.0), raise_server_exceptions=False) as client:
        client.root = root
        yield client


def _json_error(resp, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/json"), resp.text[:200]
    assert resp.json()["error"]["code"] == code


def _metric(client, status: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("backdrop_http_requests_total{") and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ----------------------------------------------------------------------------------------- class 11
NAMES = {"nul": "a\x00b.jpg", "long": "x" * 300 + ".jpg", "folders": "../../../../tmp/evil.jpg",
         "control": "new\nline\r.jpg", "non-ascii-long": "é" * 200 + ".png"}


@pytest.mark.parametrize("kind", sorted(NAMES))
def test_client_file_names_are_sanitised(routed, kind):
    resp = routed.post("/v1/remove", files={"file": (NAMES[kind], photo_bytes(1), "image/jpeg")})
    assert resp.status_code == 200, resp.text[:500]
    assert resp.headers["X-Backdrop-Review"] == "queued"
    photos = list((routed.root / "review" / "photos").iterdir())
    assert photos and all(len(p.name.encode()) <= 255 and "\x00" not in p.name for p in photos)
    assert not Path("/tmp/evil.jpg").exists()


@pytest.mark.parametrize("kind", ["nul", "long", "control"])
def test_sanitised_names_in_a_batch(routed, kind):
    resp = routed.post("/v1/remove/batch", files=[("files", (NAMES[kind], photo_bytes(2), "image/jpeg")),
                                                  ("files", ("ok.jpg", photo_bytes(3), "image/jpeg"))])
    assert resp.status_code == 200, resp.text[:500]
    assert [r["ok"] for r in resp.json()["results"]] == [True, True]


@pytest.mark.parametrize("endpoint", ["/v1/remove", "/v1/remove/batch", "/v1/remove?format=white"])
def test_an_unhandled_error_is_a_json_500_counted_in_metrics(routed, endpoint, monkeypatch):
    queue = routed.app.state.queue

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(queue, "add", broken)
    before = _metric(routed, "500")
    field = "files" if endpoint.endswith("batch") else "file"
    resp = routed.post(endpoint, files=[(field, ("p.jpg", photo_bytes(4), "image/jpeg"))])
    _json_error(resp, 500, "internal_error")
    assert "disk on fire" not in resp.text  # no internals to the client
    assert _metric(routed, "500") == before + 1


# ------------------------------------------------------------------------------------------ class 9
def _fill(client, leave: int):
    budget = client.app.state.budget
    taken = budget.limit - budget.in_use - leave
    assert budget.reserve(taken)
    return budget, taken


BUSY = {
    "raw": lambda c: c.post("/v1/remove", content=photo_bytes(5), headers={"content-type": "image/jpeg"}),
    "batch": lambda c: c.post("/v1/remove/batch", files=[("files", ("a.jpg", photo_bytes(5), "image/jpeg"))]),
    "chunked": lambda c: c.post("/v1/remove", content=iter([photo_bytes(5)]),
                                headers={"content-type": "image/jpeg"}),
}


@pytest.mark.parametrize("kind", sorted(BUSY))
def test_past_the_byte_budget_requests_get_503_with_retry_after(published, kind):
    budget, taken = _fill(published, leave=1000)
    try:
        resp = BUSY[kind](published)
        _json_error(resp, 503, "busy")
        assert int(resp.headers["Retry-After"]) > 0
    finally:
        budget.release(taken)
    assert budget.in_use == 0
    assert BUSY[kind](published).status_code == 200  # room again: served
    assert budget.in_use == 0


@pytest.mark.parametrize("body", [b"", b"not an image", photo_bytes(6)[:400]], ids=["empty", "text", "truncated"])
def test_reservations_are_released_after_errors(published, body):
    resp = published.post("/v1/remove", content=body, headers={"content-type": "image/jpeg"})
    assert resp.status_code in (400, 415)
    too_big = published.post("/v1/remove", content=b"\xff\xd8\xff" + b"0" * (MAX_UPLOAD + 10))
    _json_error(too_big, 413, "too_large")
    assert published.app.state.budget.in_use == 0


def _asgi(app, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict, bool]:
    """One request straight into the ASGI app; whether the app asked for the body at all."""
    read = False
    sent: list[dict] = []

    async def receive():
        nonlocal read
        read = True
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": "", "state": {}}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), read


@pytest.mark.parametrize(("path", "ctype"), [("/v1/remove", b"image/jpeg"), ("/v1/remove/batch",
                         b"multipart/form-data; boundary=x"), ("/v1/remove", b"multipart/form-data; boundary=y")])
def test_content_length_is_checked_before_reading(published, path, ctype):
    status, _headers, read = _asgi(published.app, path, [(b"content-type", ctype),
                                                         (b"content-length", b"100000000000")])
    assert status == 413 and not read
    assert published.app.state.budget.in_use == 0


# ------------------------------------------------------------------------------------------ class 8
HEADERS = {
    "one-long": lambda: {"x-junk": "a" * 200_000},
    "many": lambda: {f"x-h{i}": "b" * 100 for i in range(1000)},
    "long-cookie": lambda: {"cookie": "c=" + "d" * 100_000},
}


@pytest.mark.parametrize("kind", sorted(HEADERS))
def test_too_large_headers_get_431(published, kind):
    resp = published.get("/healthz", headers=HEADERS[kind]())
    _json_error(resp, 431, "headers_too_large")
    assert published.get("/healthz").status_code == 200


def test_a_too_long_request_line_gets_431(published):
    status, _headers, read = _asgi(published.app, "/healthz/" + "z" * 100_000, [])
    assert status == 431 and not read


# ---------------------------------------------------------------------------------------- invariant
def test_a_mixed_batch_gives_one_result_per_file(published):
    files = [("shirt.jpg", photo_bytes(1)), ("shirt.png", photo_bytes(2, "PNG")), ("shirt.jpg", photo_bytes(3)),
             ("sub/shirt.jpg", photo_bytes(4)), ("trunc.jpg", photo_bytes(5)[:300]), ("text.png", b"hello"),
             ("zero.jpg", b""), ("../../link.jpg", photo_bytes(6))]
    root = published.root
    before = set(root.parent.rglob("*"))
    resp = published.post("/v1/remove/batch", files=[("files", (n, d, "application/octet-stream")) for n, d in files])
    assert resp.status_code == 200, resp.text[:500]
    results = resp.json()["results"]
    assert len(results) == len(files)
    assert [r["ok"] for r in results] == [True, True, True, True, False, False, False, True]
    assert all(("data_base64" in r) != ("error" in r) for r in results)
    assert set(root.parent.rglob("*")) - before <= set((root / "review").rglob("*")) | {root / "review"}
    assert json.dumps(resp.json())  # plain JSON, nothing unencodable
    assert published.app.state.budget.in_use == 0


@pytest.mark.parametrize("chunks_before", [0, 1, 3])
def test_a_client_that_hangs_up_mid_upload_is_not_a_server_error(published, chunks_before):
    """An aborted upload is the client's doing: a 4xx, no `internal_error`, the reservation released."""
    import asyncio

    from prometheus_client import REGISTRY

    def internal_errors() -> float:
        return sum(s.value for m in REGISTRY.collect() for s in m.samples
                   if s.labels.get("reason") == "internal_error" and s.name.endswith("_total"))

    before = internal_errors()
    messages = [{"type": "http.request", "body": b"\xff\xd8\xff" + b"0" * 1000, "more_body": True}] * chunks_before
    messages.append({"type": "http.disconnect"})
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/remove", "raw_path": b"/v1/remove", "query_string": b"",
             "headers": [(b"content-type", b"image/jpeg"), (b"content-length", b"5000")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": "", "state": {}}
    asyncio.run(published.app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert 400 <= start["status"] < 500
    assert internal_errors() == before
    assert published.app.state.budget.in_use == 0
