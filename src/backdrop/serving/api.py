"""`backdrop serve`: the cut-out HTTP API (FastAPI + uvicorn).

    POST /v1/remove?format=rgba|white|mask    one photo: multipart (any file field) or the raw image bytes
    POST /v1/remove/batch?format=...          several photos as multipart files → JSON with base64 outputs
    GET  /healthz                             model, version, uptime
    GET  /metrics                             Prometheus text format
    GET  /docs, /openapi.json                 OpenAPI

`create_app(params, model)` builds the app from explicit params; `backdrop serve` runs it through the
uvicorn factory `backdrop.cli.serving:app_from_env`, which loads `--params` once per worker. Each
worker loads the model once (at startup, through `serving.segmenter.load_segmenter`) and follows the
registry alias (`runtime.ModelHandle`).
Untrusted input is refused as cheaply as possible: Content-Length and streamed byte count against
`serve.max_upload_bytes` (413), magic bytes (415; the declared content type is ignored), the header's
pixel count against `serve.max_pixels` before decoding (413), truncated/corrupt data (400). Every
error is JSON: `{"error": {"code": ..., "message": ...}}`. With `$<serve.token_env>` set, /v1/* needs
`Authorization: Bearer <token>`.

Limits that keep one worker alive whatever clients send:

* headers — request line + headers above `MAX_HEADER_BYTES` (64 KiB; a module constant, params have no
  field for it) get 431, from the server itself (`backdrop serve` runs uvicorn's h11 parser with that
  cap, `serving.httplimits`) and again from the app (`HeaderLimit`, for any other server);
* bytes in flight — all requests of a worker together may hold at most `BUDGET_REQUESTS` (2) × the
  largest allowed request (`serve.max_upload_bytes` × `serve.max_batch_files` + multipart overhead).
  A request reserves its Content-Length (or that maximum when it has none) before a byte is read; past
  the budget it gets 503 with `Retry-After`. Multipart parts are spooled to temporary files while the
  body streams in (Starlette's `UploadFile`), never first collected as one bytes object;
* errors — anything unexpected is a JSON 500 (`internal_error`), logged, and counted in /metrics.
  Client-supplied file names are sanitised (`serving.names.sanitize_filename`) before any use in a path.

Responses carry `X-Backdrop-Confidence`, `X-Backdrop-Review` (`queued` when the confidence is below
`serve.review_threshold`: the photo and cut-out were also put into the review queue) and
`X-Backdrop-Model`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import BackgroundTasks, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from backdrop.config import Params, resolve
from backdrop.io import BadImageError
from backdrop.serving.base import lane_count
from backdrop.serving.names import sanitize_filename
from backdrop.serving.outputs import OutputOptions, compose, encode
from backdrop.serving.outputs import finish as finish_prob
from backdrop.serving.review import AUDIT, Confidence, ReviewQueue, confidence, is_audit

log = logging.getLogger(__name__)

STATUS_FOR = {"empty_file": 400, "corrupt_file": 400, "not_an_image": 415, "too_large": 413,
              "missing_file": 400}
MULTIPART_OVERHEAD = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024  # request line + headers; larger → 431 (server and app)
BUDGET_REQUESTS = 2           # bytes in flight per worker ≤ this × the largest allowed request
RETRY_AFTER_S = 5
Format = Literal["rgba", "white", "mask"]
MIME = {"rgba": "image/png", "mask": "image/png", "white": "image/jpeg"}
EXT = {"image/png": ".png", "image/jpeg": ".jpg"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class ByteBudget:
    """Bytes of request bodies a worker holds at once, across all requests (thread-safe)."""

    def __init__(self, limit: int):
        self.limit, self.in_use = limit, 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        with self._lock:
            if self.in_use + n > self.limit:
                return False
            self.in_use += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.in_use = max(0, self.in_use - n)


class HeaderLimit:
    """ASGI middleware: 431 when the request line + headers exceed `limit` bytes (as the server counts)."""

    def __init__(self, app, limit: int = MAX_HEADER_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
            size += sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or ())
            if size > self.limit:
                response = _error(431, "headers_too_large", f"request line and headers exceed {self.limit} bytes",
                                  {"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


@dataclass
class Result:
    body: bytes
    media_type: str
    width: int
    height: int
    conf: Confidence
    routed: bool
    model: str
    photo: object = None  # kept only until the prediction log has them
    prob: object = None


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("backdrop_http_requests", "HTTP requests", ["path", "status"], registry=r)
        self.latency = Histogram("backdrop_http_request_seconds", "request latency", ["path"], registry=r,
                                 buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30))
        self.images = Counter("backdrop_images", "photos cut out", ["format", "review"], registry=r)
        self.rejected = Counter("backdrop_rejected_uploads", "uploads refused", ["code"], registry=r)
        self.inference = Histogram("backdrop_inference_seconds", "model run per batch", registry=r,
                                   buckets=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5))
        self.confidence = Histogram("backdrop_confidence", "confidence per photo", registry=r,
                                    buckets=(0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99, 1.0))
        self.in_flight = Gauge("backdrop_in_flight", "requests being processed", registry=r)
        self.model_info = Gauge("backdrop_model_info", "loaded model", ["source"], registry=r)
        self.reloads = Gauge("backdrop_model_reloads", "alias moves picked up since start", registry=r)


def create_app(params: Params, model: str | None = None) -> FastAPI:
    """The API for `model` (default `serve.model`) with the `serve:` settings of `params`."""
    from backdrop.serving.runtime import ModelHandle

    sp = params.serve
    spec = model or sp.model
    handle = ModelHandle(spec, params, threads=sp.threads or None, refresh_s=sp.refresh_s, precision=sp.precision)
    options = OutputOptions.from_params(sp)
    queue = ReviewQueue(resolve(sp.review_dir))
    metrics = Metrics()
    lanes = lane_count(params)  # parallel 1-thread sessions, as `backdrop remove`
    jobs = asyncio.Semaphore(max(2, lanes))  # requests processed at once: bounds memory (max_pixels each)
    budget = ByteBudget(BUDGET_REQUESTS * (sp.max_upload_bytes * sp.max_batch_files + MULTIPART_OVERHEAD))
    started = time.time()
    recorders: dict[str, object] = {}
    log_predictions = params.monitoring.record_predictions

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(handle.load)  # once per worker, before the first request
        metrics.model_info.labels(handle.segmenter.source).set(1)
        handle.start()
        yield
        handle.stop()

    app = FastAPI(title="backdrop", version=__import__("backdrop").__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # served offline from packaged files (serving/docs.py)
                  description="Background removal for product photos. Send a JPEG/PNG/WebP; get an RGBA "
                              "PNG cut-out, a white-background JPEG or the mask, at the photo's size.")
    from backdrop.serving.docs import add_offline_docs

    add_offline_docs(app)

    # ------------------------------------------------------------------ errors, auth, metrics middleware
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        metrics.rejected.labels(exc.code).inc()
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        msg = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        metrics.rejected.labels("invalid_request").inc()
        return _error(422, "invalid_request", msg)

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        path = request.url.path
        if path.startswith("/v1/"):
            token = os.environ.get(sp.token_env)
            if token:
                got = request.headers.get("authorization", "")
                if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                    metrics.requests.labels(path, "401").inc()
                    return _error(401, "unauthorized", "missing or wrong bearer token",
                                  {"WWW-Authenticate": "Bearer"})
        start = time.perf_counter()
        metrics.in_flight.inc()
        try:
            response = await call_next(request)
        except Exception:  # a bug or an environment failure: JSON, logged, counted — never plain text
            log.exception("unhandled error in %s %s", request.method, path)
            metrics.rejected.labels("internal_error").inc()
            response = _error(500, "internal_error", "internal server error (logged on the server)")
        finally:
            metrics.in_flight.dec()
            held = getattr(request.state, "reserved", 0)
            if held:
                request.state.reserved = 0
                budget.release(held)
        if path.startswith("/v1/") or path in ("/healthz",) or response.status_code >= 500:
            metrics.latency.labels(path).observe(time.perf_counter() - start)
            metrics.requests.labels(path, str(response.status_code)).inc()
        return response

    # ---------------------------------------------------------------------------------- body reading
    def reserve(request: Request, limit: int) -> int:
        """Reserve the body's bytes in the worker's budget before reading any: 413 past the request's
        own limit (by Content-Length), 503 + Retry-After past the budget. Released by `_observe`."""
        declared = request.headers.get("content-length")
        size = int(declared) if declared and declared.isdigit() else limit
        if size > limit:
            raise ApiError(413, "too_large", f"upload of {declared} bytes exceeds the limit of {limit} bytes")
        if not budget.reserve(size):
            raise ApiError(503, "busy", f"the server holds {budget.in_use} bytes of uploads; try again shortly",
                           {"Retry-After": str(RETRY_AFTER_S)})
        request.state.reserved = getattr(request.state, "reserved", 0) + size
        return size

    def limited(request: Request, allowed: int) -> Request:
        """The request with a receive that refuses bodies longer than `allowed` (chunked or lying)."""
        seen = 0

        async def receive():
            nonlocal seen
            message = await request.receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > allowed:
                    raise ApiError(413, "too_large", f"upload exceeds the limit of {allowed} bytes")
            return message

        return Request(request.scope, receive)

    async def uploads(request: Request, max_files: int) -> list[tuple[str, bytes]]:
        """(filename, bytes) of every uploaded photo: multipart file fields, or the raw body as one photo.

        File names are sanitised; multipart parts stream to spooled temporary files (memory up to 1 MB
        each, then disk) within the request's reservation.
        """
        ctype = request.headers.get("content-type", "")
        multipart = ctype.startswith("multipart/form-data")
        allowed = reserve(request, sp.max_upload_bytes * max_files + MULTIPART_OVERHEAD if multipart
                          else sp.max_upload_bytes)
        body_request = limited(request, allowed)
        if not multipart:
            buf = bytearray()
            try:
                async for chunk in body_request.stream():
                    buf += chunk
            except ClientDisconnect:  # the client gave up: its error, not the server's (no 500, no trace)
                raise ApiError(400, "client_disconnected", "the client closed the connection mid-upload") from None
            return [(sanitize_filename(request.query_params.get("filename")), bytes(buf))]
        try:
            form = await body_request.form(max_files=max_files, max_fields=max_files + 8)
        except ApiError:
            raise
        except Exception as exc:  # MultiPartException: malformed body, too many files
            raise ApiError(400, "bad_multipart", f"cannot parse the multipart body: {exc}") from None
        files = []
        try:
            for _key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    name = sanitize_filename(value.filename)
                    if (value.size or 0) > sp.max_upload_bytes:
                        raise ApiError(413, "too_large", f"{name}: {value.size} bytes exceeds the limit "
                                                         f"of {sp.max_upload_bytes} bytes")
                    files.append((name, await value.read()))
        finally:
            await form.close()
        if not files:
            raise ApiError(400, "no_file", "the multipart body has no file field")
        return files

    # ------------------------------------------------------------------------------------ processing
    def decode(data: bytes):
        from backdrop.serving.images import decode as decode_bytes

        return decode_bytes(data, sp.max_pixels)

    def finish(name: str, data: bytes, photo, pred, fmt: str, source: str) -> Result:
        conf = confidence(pred.small, pred.disagreement)
        prob, shown = finish_prob(photo, pred.prob, fmt, options)
        body, media = encode(compose(shown, prob, fmt, options), fmt)
        routed = conf.score < sp.review_threshold
        sha = hashlib.sha256(data).hexdigest()
        if routed:
            queue.add(name, sha, data, body, EXT[media], conf, source)
        elif is_audit(sha, sp.audit_share):  # published, and also checked by a person (unbiased monitoring)
            queue.add(name, sha, data, body, EXT[media], conf, source, reason=AUDIT)
        metrics.images.labels(fmt, "queued" if routed else "published").inc()
        metrics.confidence.observe(conf.score)
        keep = log_predictions
        return Result(body, media, photo.width, photo.height, conf, routed, source,
                      photo if keep else None, prob if keep else None)

    def process(items: list[tuple[str, bytes]], fmt: str) -> list[Result | BadImageError]:
        seg = handle.segmenter  # this request keeps this version even if the alias moves meanwhile
        decoded: list = []
        for _name, data in items:
            try:
                decoded.append(decode(data))
            except BadImageError as exc:
                decoded.append(exc)
        photos = [d for d in decoded if not isinstance(d, BadImageError)]
        t0 = time.perf_counter()
        lane = getattr(seg, "predict_on_lane", None)  # the ONNX engine: one of `lanes` sessions, not all cores
        preds = iter(lane(photos, lanes) if lane and photos else seg.predict_batch(photos))
        if photos:
            metrics.inference.observe(time.perf_counter() - t0)
        out: list[Result | BadImageError] = []
        for (name, data), d in zip(items, decoded, strict=True):
            out.append(d if isinstance(d, BadImageError) else finish(name, data, d, next(preds), fmt, seg.source))
        return out

    def record(items: list[tuple[str, bytes]], results: list) -> None:
        """Prediction log (monitoring), run after the response was sent; never fails a request."""
        try:
            from backdrop.data.predlog import PredictionRecorder

            for (name, data), res in zip(items, results, strict=True):
                if isinstance(res, BadImageError):
                    continue
                rec = recorders.get(res.model)
                if rec is None:
                    rec = recorders[res.model] = PredictionRecorder(params, res.model)
                with tempfile.TemporaryDirectory(prefix="backdrop-api-") as tmp:
                    src = Path(tmp) / (Path(name).name or "upload")
                    src.write_bytes(data)
                    rec.record(src, res.photo, res.prob)
                res.photo = res.prob = None
        except Exception:
            log.exception("prediction log write failed (the response was already sent)")

    async def run_one(request: Request, fmt: str, max_files: int) -> tuple[list, list]:
        items = await uploads(request, max_files)
        if len(items) > max_files:
            raise ApiError(413, "too_many_files", f"{len(items)} files; at most {max_files} per request")
        async with jobs:
            results = await run_in_threadpool(process, items, fmt)
        return items, results

    # ------------------------------------------------------------------------------------- endpoints
    body_doc = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/webp": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
    batch_doc = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}

    @app.post("/v1/remove", openapi_extra=body_doc, response_class=Response, summary="Cut out one photo",
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}}},
                         400: {"description": "empty, corrupt or truncated image"},
                         401: {"description": "bearer token required"},
                         413: {"description": "too many bytes or pixels"},
                         415: {"description": "not a supported image (judged by its bytes)"}})
    async def remove_one(request: Request, background: BackgroundTasks,
                         format: Format = Query(None, description="rgba | white | mask")):  # noqa: A002,B008
        fmt = format or sp.format
        items, results = await run_one(request, fmt, 1)
        if log_predictions:
            background.add_task(record, items, results)
        res = results[0]
        if isinstance(res, BadImageError):
            raise ApiError(STATUS_FOR.get(res.reason, 400), res.reason, f"{items[0][0]}: {res}")
        return Response(res.body, media_type=res.media_type, headers={
            "X-Backdrop-Confidence": f"{res.conf.score:.4f}",
            "X-Backdrop-Review": "queued" if res.routed else "published",
            "X-Backdrop-Model": res.model, "X-Backdrop-Size": f"{res.width}x{res.height}"})

    @app.post("/v1/remove/batch", openapi_extra=batch_doc, summary="Cut out several photos")
    async def remove_batch(request: Request, background: BackgroundTasks,
                           format: Format = Query(None, description="rgba | white | mask")):  # noqa: A002,B008
        fmt = format or sp.format
        items, results = await run_one(request, fmt, sp.max_batch_files)
        if log_predictions:
            background.add_task(record, items, results)
        out = []
        for (name, _data), res in zip(items, results, strict=True):
            if isinstance(res, BadImageError):
                out.append({"filename": name, "ok": False, "error": {
                    "status": STATUS_FOR.get(res.reason, 400), "code": res.reason, "message": str(res)}})
            else:
                out.append({"filename": name, "ok": True, "media_type": res.media_type, "width": res.width,
                            "height": res.height, **res.conf.as_dict(),
                            "review": "queued" if res.routed else "published", "model": res.model,
                            "data_base64": base64.b64encode(res.body).decode()})
        return {"format": fmt, "results": out}

    @app.get("/healthz", summary="Liveness + the loaded model")
    async def healthz():
        return {"status": "ok", "model": handle.info(), "uptime_s": round(time.time() - started, 1),
                "pid": os.getpid()}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        seg = handle._segmenter  # noqa: SLF001
        if seg is not None:
            metrics.model_info.clear()
            metrics.model_info.labels(seg.source).set(1)
        metrics.reloads.set(handle.reloads)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(HeaderLimit, limit=MAX_HEADER_BYTES)  # outermost: before auth and body reading
    app.state.handle = handle
    app.state.queue = queue
    app.state.budget = budget
    return app
