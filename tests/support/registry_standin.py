"""A small in-process registry that serves the OCI 1.1 referrers API, for the tests of that
path: no registry installable here has it (Debian's docker-registry is distribution 2.8,
which predates the API). It keeps blobs and manifests in memory and does what the
distribution spec says for what baker uses: blob HEAD/GET, chunked and monolithic uploads
with status and cross-repository mounts, manifests by tag and digest, `OCI-Subject` on a
manifest with a subject, and GET /v2/<name>/referrers/<digest>. Plain HTTP; no logins, or
with `login=(user, password)` the registry token flow (Docker's token spec): every request
without the token is answered 401 with a Bearer challenge naming /token, which hands the
token out for that Basic login only."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

INDEX = "application/vnd.oci.image.index.v1+json"


class Store:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.links: set[tuple[str, str]] = set()  # (repo, digest) a repository can read
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}  # (repo, ref) -> data, type
        self.uploads: dict[str, bytearray] = {}
        self.lock = threading.Lock()


TOKEN = "standin-token"


def _handler(store: Store, login: tuple[str, str] | None) -> type[BaseHTTPRequestHandler]:
    route = re.compile(
        r"/v2/(?P<repo>.+?)/(?P<kind>blobs/uploads|blobs|manifests|referrers)/?(?P<rest>[^/]*)$"
    )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(
            self, code: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            if login is None:
                return True
            url = urlsplit(self.path)
            if url.path == "/token":
                basic = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
                if self.headers.get("Authorization") == f"Basic {basic}":
                    self._reply(200, json.dumps({"token": TOKEN}).encode())
                else:
                    self._reply(401)
                return False
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                return True
            host = self.headers.get("Host")
            challenge = f'Bearer realm="http://{host}/token",service="standin",scope="repository:x:pull,push"'
            self._body()
            self._reply(401, b"", {"WWW-Authenticate": challenge})
            return False

        def _route(self) -> tuple[str, str, str, dict[str, list[str]]] | None:
            if not self._authorized():
                return None
            url = urlsplit(self.path)
            if url.path == "/v2/":
                self._reply(200, b"{}")
                return None
            m = route.match(url.path)
            if not m:
                self._reply(404)
                return None
            return m["repo"], m["kind"], m["rest"], parse_qs(url.query)

        def do_GET(self) -> None:
            r = self._route()
            if r is None:
                return
            repo, kind, rest, _ = r
            with store.lock:
                if kind == "blobs":
                    if (repo, rest) in store.links:
                        self._reply(200, store.blobs[rest], {"Docker-Content-Digest": rest})
                    else:
                        self._reply(404)
                elif kind == "blobs/uploads":
                    got = store.uploads.get(rest)
                    if got is None:
                        self._reply(404)
                    else:
                        self._reply(
                            204,
                            b"",
                            {
                                "Range": f"0-{len(got) - 1}",
                                "Location": f"/v2/{repo}/blobs/uploads/{rest}",
                            },
                        )
                elif kind == "manifests":
                    got_m = store.manifests.get((repo, rest))
                    if got_m is None:
                        self._reply(404)
                    else:
                        digest = "sha256:" + hashlib.sha256(got_m[0]).hexdigest()
                        self._reply(
                            200,
                            got_m[0],
                            {"Content-Type": got_m[1], "Docker-Content-Digest": digest},
                        )
                else:  # referrers
                    found = []
                    for (r_repo, ref), (data, media) in store.manifests.items():
                        if r_repo != repo or not ref.startswith("sha256:"):
                            continue
                        doc = json.loads(data)
                        if (doc.get("subject") or {}).get("digest") == rest:
                            found.append(
                                {
                                    "mediaType": media,
                                    "digest": ref,
                                    "size": len(data),
                                    "artifactType": doc.get("artifactType"),
                                }
                            )
                    body = json.dumps(
                        {"schemaVersion": 2, "mediaType": INDEX, "manifests": found}
                    ).encode()
                    self._reply(200, body, {"Content-Type": INDEX})

        do_HEAD = do_GET

        def do_POST(self) -> None:
            r = self._route()
            if r is None:
                return
            repo, _, _, query = r
            self._body()
            with store.lock:
                if (
                    "mount" in query
                    and (query.get("from", [""])[0], query["mount"][0]) in store.links
                ):
                    store.links.add((repo, query["mount"][0]))
                    self._reply(201, b"", {"Location": f"/v2/{repo}/blobs/{query['mount'][0]}"})
                    return
                session = uuid.uuid4().hex
                store.uploads[session] = bytearray()
            self._reply(
                202, b"", {"Location": f"/v2/{repo}/blobs/uploads/{session}", "Range": "0-0"}
            )

        def do_PATCH(self) -> None:
            r = self._route()
            if r is None:
                return
            repo, _, session, _ = r
            data = self._body()
            with store.lock:
                buf = store.uploads.get(session)
                start = int((self.headers.get("Content-Range") or "0-0").split("-")[0])
                if buf is None or start != len(buf):
                    self._reply(416)
                    return
                buf += data
            self._reply(
                202,
                b"",
                {"Location": f"/v2/{repo}/blobs/uploads/{session}", "Range": f"0-{len(buf) - 1}"},
            )

        def do_PUT(self) -> None:
            r = self._route()
            if r is None:
                return
            repo, kind, rest, query = r
            data = self._body()
            with store.lock:
                if kind == "blobs/uploads":
                    buf = store.uploads.pop(rest, bytearray()) + data
                    digest = query["digest"][0]
                    if "sha256:" + hashlib.sha256(buf).hexdigest() != digest:
                        self._reply(400)
                        return
                    store.blobs[digest] = bytes(buf)
                    store.links.add((repo, digest))
                    self._reply(201, b"", {"Location": f"/v2/{repo}/blobs/{digest}"})
                    return
                media = self.headers.get("Content-Type", "")
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                store.manifests[(repo, rest)] = (data, media)
                store.manifests[(repo, digest)] = (data, media)
                headers = {
                    "Docker-Content-Digest": digest,
                    "Location": f"/v2/{repo}/manifests/{digest}",
                }
                subject = (json.loads(data).get("subject") or {}).get("digest")
                if subject:
                    headers["OCI-Subject"] = subject
            self._reply(201, b"", headers)

        def do_DELETE(self) -> None:
            if self._authorized():
                self._reply(202)

    return Handler


class StandIn:
    def __init__(self, login: tuple[str, str] | None = None) -> None:
        self.store = Store()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.store, login))
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def tags(self, repo: str) -> set[str]:
        return {
            ref for (r, ref) in self.store.manifests if r == repo and not ref.startswith("sha256:")
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
