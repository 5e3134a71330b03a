"""A small SSH server standing in for an EC2 instance's sshd: public-key logins, recorded
commands with chosen answers, and SFTP on in-memory files. Baker reaches it through the
recipe's ssh_host/ssh_port, as it would reach a real instance."""

from __future__ import annotations

import io
import os
import re
import socket
import threading
import time
from collections.abc import Callable

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import SFTP_NO_SUCH_FILE, SFTP_OK

from baker.edge import ssh


class FakeSshd:
    """Public-key logins for the users and keys it is told; every command is recorded and
    answered by `respond` (exit 0 by default). It plays sshd's part in baker's root access:
    the grant script lets the build key in as root, the revoke script takes it out again."""

    def __init__(self) -> None:
        private, public = ssh.generate_keypair("fake-sshd")
        self.host_key = ssh.private_key(private)
        self.host_private = private
        self.host_public = public
        self.authorized: dict[str, set[str]] = {}
        self.commands: list[tuple[str, str]] = []
        # Its file system, as far as SFTP sees it: path -> (contents, mode).
        self.files: dict[str, tuple[bytes, int]] = {}
        self.respond: Callable[[str, str], int] = lambda _user, _cmd: 0
        # What a command prints: the first (part of a command, output) that matches.
        self.outputs: list[tuple[str, bytes]] = []
        # How many connections to close before sending a banner (an sshd too slow to answer).
        self.drop_first = 0
        self.dropped = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.transports: list[paramiko.Transport] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def allow(self, user: str, public_line: str) -> None:
        self.authorized.setdefault(user, set()).add(public_line.split()[1])

    def deny(self, user: str, public_line: str) -> None:
        self.authorized.get(user, set()).discard(public_line.split()[1])

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.dropped < self.drop_first:
                self.dropped += 1
                conn.close()
                continue
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            t.set_subsystem_handler("sftp", paramiko.SFTPServer, _Sftp, self)
            self.transports.append(t)
            try:
                t.start_server(server=_Session(self))
            except (paramiko.SSHException, EOFError, OSError):
                t.close()

    def executed(self, user: str) -> list[str]:
        return [cmd for u, cmd in self.commands if u == user]

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        for t in self.transports:
            t.close()


class _Session(paramiko.ServerInterface):
    def __init__(self, sshd: FakeSshd) -> None:
        self.sshd = sshd
        self.user = ""

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if key.get_base64() in self.sshd.authorized.get(username, set()):
            self.user = username
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode()
        self.sshd.commands.append((self.user, text))
        threading.Thread(target=self._run, args=(channel, text), daemon=True).start()
        return True

    def _run(self, channel: paramiko.Channel, command: str) -> None:
        time.sleep(0.01)  # let the exec request's reply go out first
        code = self.sshd.respond(self.user, command)
        if code == 0:
            self._play_sshd(command)
            out = next((o for part, o in self.sshd.outputs if part in command), b"")
            if out:
                channel.sendall(out)
        channel.send_exit_status(code)
        channel.shutdown_write()
        channel.close()

    def _play_sshd(self, command: str) -> None:
        keys = re.findall(r"(ssh-ed25519 [A-Za-z0-9+/=]+)", command)
        if "authorized_keys.root" in command and keys:
            self.sshd.allow("root", keys[0])
        elif "sshd_config.d/00-baker-build.conf" in command and "rm -f" in command:
            blob = re.search(r"grep -vF '?([A-Za-z0-9+/=]+)", command)
            for users in self.sshd.authorized.values():
                if blob:
                    users.discard(blob.group(1))


class _Sftp(paramiko.SFTPServerInterface):
    """SFTP on the stand-in's in-memory files: whole-file reads and writes, and chmod (chattr)."""

    def __init__(self, server: paramiko.ServerInterface, sshd: FakeSshd) -> None:
        super().__init__(server)
        self.sshd = sshd

    def open(
        self, path: str, flags: int, attr: paramiko.SFTPAttributes
    ) -> paramiko.SFTPHandle | int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            mode = self.sshd.files.get(path, (b"", 0o644))[1]
            return _WriteHandle(self.sshd, path, mode, flags)
        if path not in self.sshd.files:
            return SFTP_NO_SUCH_FILE
        return _ReadHandle(self.sshd.files[path][0], flags, self._attributes(path))

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        if path not in self.sshd.files:
            return SFTP_NO_SUCH_FILE
        self.sshd.files[path] = (self.sshd.files[path][0], int(attr.st_mode or 0) & 0o7777)
        return SFTP_OK

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        if path not in self.sshd.files:
            return SFTP_NO_SUCH_FILE
        return self._attributes(path)

    lstat = stat

    def _attributes(self, path: str) -> paramiko.SFTPAttributes:
        data, mode = self.sshd.files[path]
        attr = paramiko.SFTPAttributes()
        attr.st_size, attr.st_mode = len(data), 0o100000 | mode
        return attr


class _ReadHandle(paramiko.SFTPHandle):
    def __init__(self, data: bytes, flags: int, attr: paramiko.SFTPAttributes) -> None:
        super().__init__(flags)
        self.readfile = io.BytesIO(data)
        self.attr = attr

    def stat(self) -> paramiko.SFTPAttributes:
        return self.attr


class _WriteHandle(paramiko.SFTPHandle):
    def __init__(self, sshd: FakeSshd, path: str, mode: int, flags: int) -> None:
        super().__init__(flags)
        self.sshd, self.path, self.mode = sshd, path, mode
        self.writefile = io.BytesIO()

    def close(self) -> None:
        self.sshd.files[self.path] = (self.writefile.getvalue(), self.mode)
