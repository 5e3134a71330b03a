"""A recording proxy in front of the moto server: every request baker makes is kept as a
`Call` (service, region, action and parameters, as they went over the wire), a test can have
the cloud do its own part when a reply passes (`on_reply`), and the proxy can go dark at a
chosen request, like an endpoint that died mid-way."""

from __future__ import annotations

import http.client
import http.server
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_EBS_OPS = [
    ("POST", re.compile(r"^/snapshots$"), "StartSnapshot"),
    ("PUT", re.compile(r"^/snapshots/[^/]+/blocks/\d+$"), "PutSnapshotBlock"),
    ("POST", re.compile(r"^/snapshots/completion/[^/]+$"), "CompleteSnapshot"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks$"), "ListSnapshotBlocks"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/\d+$"), "GetSnapshotBlock"),
]


@dataclass(frozen=True)
class Call:
    """One API request as it went over the wire."""

    service: str
    region: str
    action: str
    params: dict[str, str]
    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False)


def _parse(method: str, path: str, headers: dict[str, str], body: bytes) -> Call:
    scope = re.search(
        r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/aws4_request", headers.get("authorization", "")
    )
    region, service = (scope.group(1), scope.group(2)) if scope else ("", "")
    route = urllib.parse.urlsplit(path).path
    params: dict[str, str] = {}
    action = f"{method} {route}"
    if service == "ebs":
        action = next((op for m, rx, op in _EBS_OPS if m == method and rx.match(route)), action)
    elif body:
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        action = params.get("Action", action)
    return Call(service, region, action, params, route, headers, body)


class Proxy(http.server.ThreadingHTTPServer):
    """Forwards every request to moto and records it; once `cut_at` matches a request, it
    answers nothing more and refuses connections, like an endpoint that died."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.calls: list[Call] = []
        self.cut_at: Callable[[Call], bool] | None = None
        # Called with each request and moto's reply before baker sees the reply: the cloud's
        # own doings that moto has no part of (cloud-init taking a key pair in, a snapshot
        # filled with the instance's blocks).
        self.on_reply: Callable[[Call, bytes], None] | None = None
        self.dark = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def go_dark(self) -> None:
        self.dark.set()
        # Refuse new connections from now on, as a stopped server would.
        self.socket.close()

    def actions(self, service: str | None = None) -> list[str]:
        return [c.action for c in self.calls if service is None or c.service == service]

    def clear(self) -> None:
        self.calls.clear()
        self.cut_at = None
        self.on_reply = None

    def close(self) -> None:
        self.shutdown()
        self.server_close()


_HOP_BY_HOP = {"connection", "expect", "transfer-encoding", "content-length", "keep-alive"}


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Proxy

    def log_message(self, *_args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _handle(self) -> None:
        if self.server.dark.is_set():
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        call = _parse(self.command, self.path, headers, body)
        with self.server.lock:
            cut = self.server.cut_at is not None and self.server.cut_at(call)
            if cut:
                self.server.go_dark()
            else:
                self.server.calls.append(call)
        if cut:
            self.close_connection = True
            return
        up = http.client.HTTPConnection(self.server.upstream.netloc, timeout=60)  # host:port
        try:
            fwd = {
                k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")
            }
            up.request(self.command, self.path, body=body, headers=fwd)
            reply = up.getresponse()
            data = reply.read()
        finally:
            up.close()
        if self.server.on_reply is not None and reply.status < 300:
            self.server.on_reply(call, data)
        self.send_response(reply.status, reply.reason)
        for key, value in reply.getheaders():
            if key.lower() not in (
                "transfer-encoding",
                "connection",
                "content-length",
                "date",
                "server",
            ):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle
