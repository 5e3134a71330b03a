"""A root session on a build machine over SSH: what the pipeline provisions, reads and shuts
down through, whichever backend started the machine (baker.backends.base.Guest)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import paramiko

from baker.edge import ssh
from baker.edge.ssh import ConnectionLost
from baker.errors import BuildError


class SshGuest:
    """A logged-in paramiko client as a Guest. The session belongs to the guest from now on:
    `close()` ends it (twice is fine)."""

    def __init__(self, client: paramiko.SSHClient) -> None:
        self.client = client
        self._sftp: paramiko.SFTPClient | None = None

    def sftp(self) -> paramiko.SFTPClient:
        # One SFTP session for all of a build's uploads: each new one starts an sftp-server
        # in the guest, a noticeable wait under TCG.
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def run(
        self, command: str, on_line: Callable[[str], None], timeout: float, stdin: bytes = b""
    ) -> tuple[int, list[str]]:
        """Run a shell command with `stdin` as its input; stream each output line (stdout and
        stderr merged) to `on_line`; return the exit code and the last lines."""
        return ssh.run(self.client, command, on_line, timeout, stdin)

    def upload(self, data: bytes | Path, remote: str, mode: int) -> None:
        """Write `data` (or the file at that path, streamed) to `remote` with `mode`."""
        try:
            sftp = self.sftp()
            if isinstance(data, Path):
                sftp.put(str(data), remote)  # in chunks, never the whole file in memory
            else:
                with sftp.open(remote, "wb") as f:
                    f.write(data)
            sftp.chmod(remote, mode)
        except (EOFError, paramiko.SSHException, OSError) as e:
            # A dropped connection shows as any of these, and EOFError would otherwise pass
            # for an end of input further up.
            if not self._connected():
                raise ConnectionLost(
                    f"the SSH connection to the build machine was lost while {remote} was uploaded."
                ) from None
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise BuildError(
                f"could not upload {remote} to the build machine ({reason})."
            ) from None

    def read(self, remote: str) -> bytes:
        """The contents of the file `remote` on the machine."""
        try:
            with self.sftp().open(remote, "rb") as f:
                # Requests in flight together, not one round trip per 32 KiB.
                f.prefetch()
                return bytes(f.read())
        except (EOFError, OSError, paramiko.SSHException) as e:
            if not self._connected():
                raise ConnectionLost(
                    f"the SSH connection to the build machine was lost while {remote} was read."
                ) from None
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise BuildError(f"could not read {remote} on the build machine ({reason}).") from None

    def _connected(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # the machine may be going down
                self._sftp.close()
            self._sftp = None
        self.client.close()
