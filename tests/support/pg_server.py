"""A real PostgreSQL server for the tests: Debian's postgresql, a throwaway cluster on
127.0.0.1 run as the postgres user (the server refuses root), removed afterwards."""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from baker.edge.ssh import free_port


@dataclass
class Postgres:
    url: str  # postgresql://baker@127.0.0.1:PORT/baker
    root: Path
    bin: Path

    def stop(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Postgres:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("postgresql is not installed: run scripts/setup-host.sh")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="baker-pg-", dir="/var/tmp"))
    shutil.chown(root, "postgres", "postgres")
    port = free_port()
    as_pg = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    subprocess.run(
        [
            *as_pg,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "baker",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        capture_output=True,
        check=True,
    )
    subprocess.run(
        [
            *as_pg,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {root}",
            "-w",
            "start",
        ],
        capture_output=True,
        check=True,
    )
    pg = Postgres(f"postgresql://baker@127.0.0.1:{port}/baker", root, bindir)
    deadline = time.monotonic() + 30
    while True:
        made = subprocess.run(
            [
                *as_pg,
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "baker",
                "baker",
            ],
            capture_output=True,
        )
        if made.returncode == 0:
            return pg
        if time.monotonic() > deadline:
            pg.stop()
            raise RuntimeError(f"PostgreSQL did not come up: {made.stderr.decode()[-500:]}")
        time.sleep(0.3)
