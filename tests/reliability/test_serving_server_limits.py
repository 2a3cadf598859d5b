"""Class 8 at the server: uvicorn as `backdrop serve` runs it caps request line + headers (431), reading
no more than about the cap, whatever the client keeps sending. Real server on 127.0.0.1, port 0."""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    import uvicorn
    from fastapi import FastAPI

    from backdrop.serving.api import HeaderLimit
    from backdrop.serving.httplimits import uvicorn_options

    app = FastAPI()
    app.add_middleware(HeaderLimit)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", **uvicorn_options())
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):  # bounded: up to ~10 s
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield port
    srv.should_exit = True
    thread.join(10)


def _send(port: int, head: bytes, junk_lines: int, line: bytes) -> bytes:
    """Send `head`, then up to `junk_lines` × `line` (stopping when the server closes), read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for _ in range(junk_lines):
                sock.sendall(line)
            sock.sendall(b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return data


CASES = {
    "one-huge-header": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: ", 1600, b"a" * 65536),  # ~100 MB
    "many-headers": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 20000, b"X-H: " + b"b" * 200 + b"\r\n"),
    "long-request-line": (b"GET /healthz?q=", 1600, b"c" * 65536),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_server_answers_431_to_huge_headers(server, case):
    head, n, line = CASES[case]
    answer = _send(server, head, n, line)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"headers_too_large" in answer


def test_normal_requests_still_work(server):
    answer = _send(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", 0, b"")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
