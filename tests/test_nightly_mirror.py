"""What tonight's mirror would change in an image, read from Packages indices served by a
local HTTP server in Debian's layout: a package of the image at a new version moves it (the
highest across the suites, in Debian's version order), a package the image does not hold
does not, and a mirror that does not answer leaves the decision to the build."""

from __future__ import annotations

import functools
import http.server
import json
import lzma
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from baker.build.options import Options
from baker.nightly import mirror, run
from baker.nightly.history import History
from baker.recipe.spec import Base

INSTALLED = {"bash": "5.2.15-2+b2", "openssl": "3.0.15-1~deb12u1", "zlib1g": "1:1.2.13.dfsg-1"}


def _index(root: Path, suite: str, packages: dict[str, str]) -> None:
    stanzas = "".join(
        f"Package: {name}\nArchitecture: amd64\nVersion: {version}\nDescription: x\n\n"
        for name, version in packages.items()
    )
    d = root / "debian" / "dists" / suite / "main" / "binary-amd64"
    d.mkdir(parents=True)
    (d / "Packages.xz").write_bytes(lzma.compress(stanzas.encode()))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Base, Path]]:
    root = tmp_path / "mirror"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield Base(mirror=f"http://127.0.0.1:{httpd.server_address[1]}/debian"), root
    httpd.shutdown()


def test_nothing_the_image_holds_moved(served: tuple[Base, Path]) -> None:
    base, root = served
    _index(root, "bookworm", {**INSTALLED, "nginx": "1.22.1-9"})
    _index(root, "bookworm-updates", {"nginx": "1.22.1-9+deb12u1"})  # not in the image
    tonight = mirror.compare(base, INSTALLED, {})
    assert tonight is not None and tonight.moved == ()
    again = mirror.compare(base, INSTALLED, {})
    assert again is not None and again.state == tonight.state


def test_an_update_of_a_package_the_image_holds_moves_it(served: tuple[Base, Path]) -> None:
    base, root = served
    _index(root, "bookworm", INSTALLED)
    _index(root, "bookworm-updates", {"openssl": "3.0.17-1~deb12u2", "bash": "5.2.15-2+b1"})
    before = mirror.compare(base, INSTALLED, {})
    assert before is not None
    # The highest version wins (an older one in another suite is not a move).
    assert [str(m) for m in before.moved] == ["openssl 3.0.15-1~deb12u1 → 3.0.17-1~deb12u2"]


def test_an_index_is_read_once_a_night(served: tuple[Base, Path]) -> None:
    base, root = served
    _index(root, "bookworm", INSTALLED)
    _index(root, "bookworm-updates", {})
    fetched: dict[str, mirror.Index] = {}
    assert mirror.compare(base, INSTALLED, fetched) is not None
    (root / "debian" / "dists").rename(root / "gone")
    tonight = mirror.compare(base, INSTALLED, fetched)  # from what was read, not the server
    assert tonight is not None and tonight.moved == ()
    assert mirror.compare(base, INSTALLED, {}) is None  # a mirror that does not answer


def test_a_night_builds_a_moved_image_without_the_step_cache(
    served: tuple[Base, Path], tmp_path: Path
) -> None:
    base, root = served
    _index(root, "bookworm", INSTALLED)
    _index(root, "bookworm-updates", {"zlib1g": "1:1.3.dfsg-3"})
    project = tmp_path / "p"
    project.mkdir()
    recipe = project / "img.yaml"
    recipe.write_text(f"name: img\nbase:\n  mirror: {base.mirror}\n")
    out = tmp_path / "out"
    (out / "img").mkdir(parents=True)
    components = [{"name": n, "version": v} for n, v in INSTALLED.items()]
    (out / "img" / "sbom.cdx.json").write_text(json.dumps({"components": components}))
    history = History(str(tmp_path / "h.db"))
    indices: dict[str, mirror.Index] = {}
    assert not run._plan(recipe, history, out, indices).no_cache  # no good night yet
    history.record({"night": "n1", "recipe": "img", "status": "built", "digest": "sha256:1"})
    n = run._plan(recipe, history, out, indices)
    assert n.no_cache and [m.name for m in n.moved] == ["zlib1g"]
    assert "--no-cache" in run._argv(n, tmp_path / "t", out, Options(), None)
    history.close()
