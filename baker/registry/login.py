"""A registry login: the credentials users have set up, given in answer to a 401 challenge.

oras.auth reads the Docker/Podman config files and credential helpers and runs the registry
token flow; what is added here is choosing Basic or Bearer by the challenge, reading the
credentials once, and the header each later request carries from the start (a disk chunk
is not sent twice to learn that it needed one).
"""

from __future__ import annotations

import os

import oras.auth  # type: ignore[import-untyped]
import oras.auth.utils  # type: ignore[import-untyped]
import oras.utils  # type: ignore[import-untyped]
import requests


def auth_files() -> list[str]:
    """Where credentials are read from, as docker, podman and skopeo look for them."""
    found = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        found.append(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        found.append(f"{os.environ['XDG_RUNTIME_DIR']}/containers/auth.json")
    found.append(os.path.expanduser("~/.config/containers/auth.json"))
    docker = os.environ.get("DOCKER_CONFIG")
    found.append(f"{docker}/config.json" if docker else os.path.expanduser("~/.docker/config.json"))
    return [f for f in found if os.path.isfile(f)]


class Login:
    """The login to one registry host."""

    def __init__(
        self, host: str, session: requests.Session, scheme: str, verify: bool | str
    ) -> None:
        self.host = host
        self.oras = oras.auth.get_auth_backend(
            "token", session, scheme == "http", tls_verify=verify
        )
        self._basic: str | None = None  # base64 user:password, once a Basic challenge asked
        self._loaded = False

    def header(self) -> dict[str, str]:
        """The Authorization header a request carries: the token, or Basic once asked for."""
        token = getattr(self.oras, "token", None)
        if token:
            return {"Authorization": f"Bearer {token}"}
        return {"Authorization": f"Basic {self._basic}"} if self._basic else {}

    def answer(self, challenge: requests.Response) -> bool:
        """Answer a 401: Basic with the configured credentials, Bearer with oras's token
        flow (a token for the scope this challenge names). False: nothing more to try."""
        scheme = challenge.headers.get("Www-Authenticate", "").split(" ", 1)[0].lower()
        self._load()
        basic = getattr(self.oras, "_basic_auth", None)
        if scheme == "basic":
            if self._basic or not basic:
                return False
            self._basic = basic
            return True
        if scheme == "bearer":
            _, ok = self.oras.authenticate_request(challenge, {}, refresh=True)
            return bool(ok)
        return False

    def _load(self) -> None:
        """The credentials for this host, read from the config files once."""
        if self._loaded:
            return
        self._loaded = True
        files = auth_files()
        self.oras._auth_config = oras.auth.utils.load_configs(files) if files else {}
        for name in oras.utils.iter_localhosts(self.host):
            if self.oras._load_auth(name):
                break
