"""A real OCI registry for the tests: Debian's docker-registry (distribution 2.8) on
127.0.0.1, with htpasswd logins and TLS from a throwaway CA, as teams run theirs; or plain
HTTP without logins, as a developer's loopback registry is.

Nothing is shared with the machine: its storage, certificates and the Docker-style auth file
(REGISTRY_AUTH_FILE) live in a temporary directory that goes with it."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from baker.edge.ssh import free_port

USER, PASSWORD = "baker", "s3cret-for-tests"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path
    ca: Path | None  # the CA bundle, None for plain HTTP
    auth_file: Path | None  # a REGISTRY_AUTH_FILE with the login, None without logins
    proc: subprocess.Popen[bytes]

    @property
    def ca_bundle(self) -> Path:
        """The CA bundle, of a registry with TLS (a plain-HTTP one has none)."""
        if self.ca is None:
            raise AssertionError(f"{self.host} is plain HTTP: it has no CA bundle")
        return self.ca

    @property
    def storage(self) -> Path:
        return self.root / "data" / "docker" / "registry" / "v2"

    def blob_file(self, digest: str) -> Path:
        hexdigest = digest.split(":", 1)[1]
        return self.storage / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"

    def tls_args(self) -> list[str]:
        """skopeo's flags for this registry."""
        if self.ca is None:
            return ["--tls-verify=false"]
        return [f"--cert-dir={self.ca.parent / 'skopeo-certs'}", f"--authfile={self.auth_file}"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signs for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "baker test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, cert_pem, key_pem


def start(root: Path, tls: bool = True) -> Registry:
    """Start a registry under `root` (made here); TLS + htpasswd logins unless tls=False."""
    root.mkdir(parents=True)
    port = free_port()
    config = [
        "version: 0.1",
        "log: {level: error}",
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    ca = auth_file = None
    if tls:
        ca, cert, key = _ca_and_cert(root)
        config += [f"  tls: {{certificate: {cert}, key: {key}}}"]
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True
        ).stdout
        (root / "htpasswd").write_text(htpasswd)
        config += ["auth:", f"  htpasswd: {{realm: baker-tests, path: {root / 'htpasswd'}}}"]
        auth_file = root / "auth.json"
        login = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        auth_file.write_text(json.dumps({"auths": {f"127.0.0.1:{port}": {"auth": login}}}))
        certs = root / "skopeo-certs"  # skopeo's --cert-dir takes *.crt CA files
        certs.mkdir()
        shutil.copy(ca, certs / "ca.crt")
    (root / "config.yml").write_text("\n".join(config) + "\n")
    log = (root / "registry.log").open("wb")
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"docker-registry exited: {(root / 'registry.log').read_text()[-2000:]}"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return Registry(f"127.0.0.1:{port}", root, ca, auth_file, proc)
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("docker-registry did not listen within 30 s")
