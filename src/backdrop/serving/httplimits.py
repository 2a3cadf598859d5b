"""Limits enforced by the HTTP server itself, before the app sees a request (`backdrop serve`).

uvicorn's default parser (httptools) reads a request's header block whole, whatever its size. `backdrop
serve` runs the h11 parser instead with `h11_max_incomplete_event_size = api.MAX_HEADER_BYTES`: a
request line plus headers larger than that is refused as soon as that many bytes have arrived, with
`431 Request Header Fields Too Large` (a JSON error like the app's) and the connection closed. The
app repeats the check (`api.HeaderLimit`), so any server in front gets the same answer.

`uvicorn_options()` is what `backdrop serve` (and the tests) pass to `uvicorn.run`/`uvicorn.Config`.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from backdrop.serving.api import MAX_HEADER_BYTES


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering 431 (not 400) when the header block exceeds the limit."""

    def send_400_response(self, msg: str) -> None:
        pending, _closed = self.conn.trailing_data
        limit = getattr(self.conn, "_max_incomplete_event_size", MAX_HEADER_BYTES)
        if len(pending) <= limit:
            super().send_400_response(msg)
            return
        body = json.dumps({"error": {"code": "headers_too_large", "message":
                                     f"request line and headers exceed {limit} bytes"}}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                   (b"content-length", str(len(body)).encode())]
        for event in (h11.Response(status_code=431, headers=headers, reason=b"Request Header Fields Too Large"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def uvicorn_options() -> dict:
    """The uvicorn settings that bound what one request can make the server read."""
    return {"http": LimitedH11Protocol, "h11_max_incomplete_event_size": MAX_HEADER_BYTES}
