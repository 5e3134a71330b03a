"""Talking to one OCI registry: blobs and manifests, streamed and checked.

The oras package gives reference parsing and, through baker.registry.login, the
authentication users have set up (Docker/Podman config files, credential helpers, the
registry token flow). Its Registry
class is not used: importing it costs ~0.9 s (it validates with jsonschema, whose format
checkers compile grammars at import), more than a whole re-push. What is added here,
because oras-py lacks it or does it in ways a disk image cannot afford:
- blobs are uploaded in bounded chunks that resume from the registry's recorded offset after
  a dropped connection (oras-py reads a whole file for a monolithic upload and restarts a
  chunked one), and mounted across repositories instead of uploaded again;
- downloads are hashed as they stream and cut off at the size the descriptor promised;
- manifests are put as their exact bytes (their digest is their identity) and read back
  with a size limit and a digest check;
- (baker.registry.referrers lists and records referrers on top of this);
- requests fail fast with one sentence instead of oras-py's minutes of blind retries.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import requests

from baker.errors import BuildError, InputError
from baker.registry import oci
from baker.registry.login import Login
from baker.registry.ref import Ref

CHUNK = 64 * 1024 * 1024
_RESUMES = 5
_TIMEOUT = (10, 300)  # connect, read
_ACCEPT = ", ".join(
    [oci.MANIFEST, oci.INDEX, "application/vnd.docker.distribution.manifest.v2+json"]
)


class RegistryError(BuildError):
    """The registry refused, failed or could not be reached (exit 1)."""


class DigestMismatch(RegistryError):
    """What was uploaded is not the digest it was to have."""


class _Hashed:
    """The sha256 of a blob's bytes as they are sent: chunks taken in order; a resume that
    skips ahead (the registry had bytes whose answer was lost) or back is filled by reading
    the content again from where the hash stands."""

    def __init__(self, read_at: Callable[[int, int], bytes]) -> None:
        self.read_at, self.h, self.at = read_at, hashlib.sha256(), 0

    def take(self, offset: int, chunk: bytes) -> None:
        if offset < self.at:
            self.h, self.at = hashlib.sha256(), 0
        self._fill(offset)
        self.h.update(chunk)
        self.at = offset + len(chunk)

    def digest(self, size: int) -> str:
        self._fill(size)
        return f"sha256:{self.h.hexdigest()}"

    def _fill(self, to: int) -> None:
        while self.at < to:
            data = self.read_at(self.at, min(CHUNK, to - self.at))
            if not data:
                break
            self.h.update(data)
            self.at += len(data)


def connect(ref: Ref, *, insecure: bool = False, ca_bundle: Path | None = None) -> Client:
    """A client for `ref`'s registry, its scheme and login settled by one ping: HTTPS, or
    plain HTTP with --insecure; a loopback registry that does not speak TLS is taken over
    plain HTTP too (as docker and skopeo do for localhost)."""
    if ca_bundle is not None and not ca_bundle.is_file():
        raise InputError(f"--ca-bundle {ca_bundle}: no such file.")
    client = Client(ref.host, "http" if insecure else "https", ca_bundle)
    try:
        client.ping()
    except _NotTls:
        if not ref.is_loopback():
            raise RegistryError(
                f"{ref.host} does not speak TLS; give --insecure to use plain HTTP."
            ) from None
        client = Client(ref.host, "http", ca_bundle)
        client.ping()
    return client


class _NotTls(RegistryError):
    pass


class Client:
    """One registry host, for any repository on it."""

    def __init__(self, host: str, scheme: str, ca_bundle: Path | None) -> None:
        self.host = host
        self.scheme = scheme
        verify: bool | str = str(ca_bundle) if ca_bundle else True
        self.session = requests.Session()
        self.session.verify = verify
        # Some registries set cookies and then treat the client as a browser (CSRF checks).
        self.session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self.login = Login(host, self.session, scheme, verify)

    def ping(self) -> None:
        """GET /v2/: is it a registry, and does it want a login (answered now, so every
        later request, a disk chunk included, carries it the first time)."""
        r = self.request("GET", f"{self.scheme}://{self.host}/v2/")
        if r.status_code != 200:
            raise RegistryError(
                f"{self.host} is not an OCI registry (GET /v2/ answered {r.status_code})."
            )

    # -- requests ------------------------------------------------------------------------

    def url(self, repo: str, path: str, **query: str) -> str:
        base = f"{self.scheme}://{self.host}/v2/{repo}/{path}"
        return f"{base}?{urlencode(query)}" if query else base

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        """One request, sent again once after answering a 401 challenge; never retried
        blindly (oras-py's retries take minutes to report a registry that is down)."""
        kw.setdefault("timeout", _TIMEOUT)
        # Per request: a session's own setting loses to $REQUESTS_CA_BUNDLE in requests.
        kw.setdefault("verify", self.session.verify)
        extra = dict(kw.pop("headers", {}) or {})
        try:
            r: requests.Response = self.session.request(
                method, url, headers={**extra, **self.login.header()}, **kw
            )
            if r.status_code == 401 and self.login.answer(r):
                r = self.session.request(
                    method, url, headers={**extra, **self.login.header()}, **kw
                )
        except requests.exceptions.SSLError as e:
            if "wrong version number" in str(e) or "record layer failure" in str(e):
                raise _NotTls(f"{self.host} does not speak TLS.") from None
            raise RegistryError(
                f"{self.host}: TLS failed ({_reason(e)}); give --ca-bundle for a private CA."
            ) from None
        except requests.exceptions.ConnectionError as e:
            raise RegistryError(f"{self.host}: cannot connect ({_reason(e)}).") from None
        except requests.exceptions.Timeout:
            raise RegistryError(f"{self.host}: no answer within {_TIMEOUT[1]} s.") from None
        if r.status_code in (401, 403):
            where = url.split("/v2/", 1)[-1] or "/v2/"
            raise RegistryError(
                f"{self.host}: access denied ({r.status_code}) to {where}; log in with "
                f"`skopeo login {self.host}` or set REGISTRY_AUTH_FILE."
            )
        return r

    def _check(
        self, r: requests.Response, what: str, ok: tuple[int, ...] = (200, 201, 202)
    ) -> requests.Response:
        if r.status_code not in ok:
            raise RegistryError(f"{self.host}: {what} failed ({r.status_code} {_error(r)}).")
        return r

    # -- blobs ---------------------------------------------------------------------------

    def has_blob(self, repo: str, digest: str) -> bool:
        r = self.request("HEAD", self.url(repo, f"blobs/{digest}"))
        return r.status_code == 200

    def mount_blob(self, repo: str, digest: str, source_repo: str) -> bool:
        """Cross-repository mount: the blob appears in `repo` without an upload."""
        r = self.request(
            "POST", self.url(repo, "blobs/uploads/", mount=digest, **{"from": source_repo})
        )
        if r.status_code == 201:
            return True
        if r.status_code == 202 and (loc := r.headers.get("Location")):
            self.request("DELETE", self._absolute(loc))  # the registry opened an upload instead
        return False

    def upload_bytes(self, repo: str, data: bytes) -> dict[str, Any]:
        digest = oci.digest_of(data)
        if not self.has_blob(repo, digest):
            start = self._check(
                self.request("POST", self.url(repo, "blobs/uploads/")), "starting an upload"
            )
            url = self._with_digest(self._location(start), digest)
            self._check(
                self.request(
                    "PUT", url, data=data, headers={"Content-Type": "application/octet-stream"}
                ),
                "uploading a blob",
            )
        return {"digest": digest, "size": len(data)}

    def upload_stream(
        self,
        repo: str,
        digest: str,
        size: int,
        read_at: Callable[[int, int], bytes],
        on_bytes: Callable[[int], None] = lambda n: None,
    ) -> int:
        """Upload a blob of `size` bytes whose content `read_at(offset, n)` gives, in chunks,
        resuming after a dropped connection from the offset the registry has. The content is
        hashed as it goes (one read of a disk, not two): if it is not `digest`, the upload is
        cancelled before it completes (DigestMismatch). Returns the bytes sent; 0 when the
        registry already has the blob."""
        if self.has_blob(repo, digest):
            return 0
        start = self.request("POST", self.url(repo, "blobs/uploads/"))
        loc = self._location(self._check(start, "starting an upload"))
        hashed = _Hashed(read_at)
        offset = sent = resumes = 0
        while offset < size:
            chunk = read_at(offset, min(CHUNK, size - offset))
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(chunk)),
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            }
            try:
                r = self._check(
                    self.request("PATCH", loc, data=chunk, headers=headers), "uploading a chunk"
                )
            except RegistryError:
                resumes += 1
                if resumes > _RESUMES:
                    raise
                loc, offset = self._upload_status(loc)
                continue
            hashed.take(offset, chunk)
            loc = self._location(r)
            offset += len(chunk)
            sent += len(chunk)
            on_bytes(len(chunk))
        if hashed.digest(size) != digest:
            self.request("DELETE", loc)
            raise DigestMismatch(f"the content is not {digest}")
        self._check(
            self.request("PUT", self._with_digest(loc, digest)), "completing an upload", (201,)
        )
        return sent

    def upload_file(
        self, repo: str, path: Path, digest: str, on_bytes: Callable[[int], None] = lambda n: None
    ) -> int:
        size = path.stat().st_size
        with path.open("rb") as f:

            def read_at(offset: int, n: int) -> bytes:
                f.seek(offset)
                return f.read(n)

            return self.upload_stream(repo, digest, size, read_at, on_bytes)

    def _upload_status(self, loc: str) -> tuple[str, int]:
        """Where an interrupted upload stands: its URL and the next offset to send."""
        r = self._check(self.request("GET", loc), "resuming an upload", (204,))
        end = r.headers.get("Range", "0--1").rsplit("-", 1)[-1]
        return self._location(r, loc), int(end) + 1

    def fetch_blob(
        self,
        repo: str,
        desc: dict[str, Any],
        dest: Path,
        on_bytes: Callable[[int], None] = lambda n: None,
    ) -> str:
        """Stream a blob into `dest`, hashing as it comes; refused unless its digest and size
        are the descriptor's (a longer stream is cut off at the promised size). Returns its
        sha256 hex, so what was just hashed is not hashed again."""
        digest, size = desc["digest"], desc["size"]
        r = self.request("GET", self.url(repo, f"blobs/{digest}"), stream=True)
        with r:
            if r.status_code == 404:
                raise RegistryError(f"{self.host}/{repo}: blob {digest} is missing.")
            self._check(r, f"fetching blob {digest}", (200,))
            h, got = hashlib.sha256(), 0
            with dest.open("wb") as f:
                for chunk in r.iter_content(1 << 20):
                    got += len(chunk)
                    if got > size:
                        raise RegistryError(
                            f"{self.host}/{repo}: blob {digest} is longer than its {size} bytes."
                        )
                    h.update(chunk)
                    f.write(chunk)
                    on_bytes(len(chunk))
        if got != size or f"sha256:{h.hexdigest()}" != digest:
            raise RegistryError(
                f"{self.host}/{repo}: blob {digest} does not match its digest "
                f"(got sha256:{h.hexdigest()}, {got} bytes)."
            )
        return h.hexdigest()

    def fetch_bytes(self, repo: str, desc: dict[str, Any], limit: int, what: str) -> bytes:
        """A small blob (a config, a statement) in memory, checked against its descriptor."""
        if desc["size"] > limit:
            raise RegistryError(f"{what} is larger than {limit} bytes.")
        r = self.request("GET", self.url(repo, f"blobs/{desc['digest']}"), stream=True)
        with r:
            self._check(r, f"fetching {what}", (200,))
            data = read_limited(r, desc["size"], what)
        if oci.digest_of(data) != desc["digest"]:
            raise RegistryError(f"{what} does not match its digest {desc['digest']}.")
        return data

    # -- manifests -----------------------------------------------------------------------

    def put_manifest(
        self, repo: str, reference: str, data: bytes, media_type: str
    ) -> requests.Response:
        r = self.request(
            "PUT",
            self.url(repo, f"manifests/{reference}"),
            data=data,
            headers={"Content-Type": media_type},
        )
        return self._check(r, f"putting manifest {reference}", (201,))

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        """(bytes, media type, digest) of a manifest, None if the registry has none; a digest
        reference must match what comes back."""
        r = self.request(
            "GET",
            self.url(repo, f"manifests/{reference}"),
            headers={"Accept": _ACCEPT},
            stream=True,
        )
        with r:
            if r.status_code == 404:
                return None
            self._check(r, f"fetching manifest {reference}", (200,))
            data = read_limited(r, oci.MAX_MANIFEST, f"{self.host}/{repo} manifest {reference}")
        digest = oci.digest_of(data)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(
                f"{self.host}/{repo}: manifest {reference} does not match its digest "
                f"(got {digest})."
            )
        return data, r.headers.get("Content-Type", "").split(";")[0], digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        self.request("DELETE", self.url(repo, f"manifests/{digest}"))

    # -- helpers -------------------------------------------------------------------------

    def _absolute(self, loc: str) -> str:
        return loc if loc.startswith("http") else urljoin(f"{self.scheme}://{self.host}", loc)

    def _location(self, r: requests.Response, default: str | None = None) -> str:
        loc = r.headers.get("Location") or default
        if not loc:
            raise RegistryError(f"{self.host}: the registry gave no upload location.")
        return self._absolute(loc)

    @staticmethod
    def _with_digest(url: str, digest: str) -> str:
        return f"{url}{'&' if '?' in url else '?'}{urlencode({'digest': digest})}"


def read_limited(r: requests.Response, limit: int, what: str) -> bytes:
    data = b""
    for chunk in r.iter_content(65536):
        data += chunk
        if len(data) > limit:
            raise RegistryError(f"{what} is larger than {limit} bytes.")
    return data


def _error(r: requests.Response) -> str:
    try:
        errors = json.loads(r.content[:65536]).get("errors") or []
        return "; ".join(str(e.get("message") or e.get("code")) for e in errors[:2]) or r.reason
    except (ValueError, AttributeError):
        return r.reason or "no reason given"


def _reason(e: Exception) -> str:
    text = str(e.__context__ or e)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "certificate verify failed",
        "timed out",
        "Connection reset",
    ):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:120] if text else type(e).__name__
