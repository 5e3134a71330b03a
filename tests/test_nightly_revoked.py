"""Revoked images in the nightly, without VMs: a revocation beside OUT/NAME that verifies
with the nightly's signing key is read before tonight's build replaces the directory and
recorded on every row of the image it names; one signed by another key, or one the nightly
has no key for, is said and ignored; the report strikes a revoked image through, with the
reason, on the index and on each of its nights."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from baker import artifact
from baker.artifact import BuildRecord, ImageRecord, RecipeRef
from baker.build import parallel
from baker.build.options import Options
from baker.evidence import revocation, signing
from baker.nightly import drift, lifecycle, mirror, report, run
from baker.nightly.history import History

WHEN = dt.datetime(2026, 12, 5, 9, 30, tzinfo=dt.UTC)


def _artifact(directory: Path, name: str, label: str) -> str:
    directory.mkdir(parents=True)
    (directory / artifact.IMAGE).write_bytes(label.encode())
    (directory / artifact.SBOM_CDX).write_text(json.dumps({"components": []}))
    digest = f"sha256:{hashlib.sha256(label.encode()).hexdigest()}"
    record = BuildRecord(
        baker_version="test",
        recipe=RecipeRef(name=name, file=f"{name}.yaml", digest=digest),
        image=ImageRecord(file=artifact.IMAGE, digest=digest),
    )
    (directory / artifact.BUILD).write_bytes(record.dump())
    return digest


def _revoke(key: Path, directory: Path, name: str, image: str, reason: str) -> None:
    envelope = revocation.sign(signing.load_private_key(key), name, image, reason, WHEN)
    (directory / revocation.FILE).write_text(json.dumps(envelope))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for name in ("web", "shop"):
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\n")
    signing.keygen(tmp_path / "keys")
    signing.keygen(tmp_path / "stranger")
    return tmp_path


def _night(
    project: Path, monkeypatch: pytest.MonkeyPatch, history: History, sign_key: Path | None
) -> tuple[str, list[str]]:
    """A night in which web builds a new image (replacing OUT/web) and shop's is unchanged."""

    def builds(
        jobs: Sequence[parallel.Job], limit: int, say: Callable[[str], None]
    ) -> list[parallel.Job]:
        for job in jobs:
            tonight = Path(next(a[6:] for a in job.argv if a.startswith("--out=")))
            job.digest = _artifact(tonight / job.name, job.name, f"{job.name}-1"
                                   if job.name == "shop" else "web-2")  # fmt: skip
            job.code = 0
        return list(jobs)

    monkeypatch.setattr(parallel, "run_all", builds)
    monkeypatch.setattr(mirror, "compare", lambda *a: None)
    monkeypatch.setattr(drift, "report", lambda old, new: None)
    said: list[str] = []
    recipes = [project / "web.yaml", project / "shop.yaml"]
    night, _ = run.run(recipes, project / "out", history, Options(sign_key=sign_key), 1,
                       said.append)  # fmt: skip
    return night, said


def _last_night(project: Path, history: History) -> tuple[str, str]:
    """Last night's images in OUT and in the history; both revoked since, shop's by a key
    the nightly does not sign with."""
    out = project / "out"
    web, shop = _artifact(out / "web", "web", "web-1"), _artifact(out / "shop", "shop", "shop-1")
    for name, digest in (("web", web), ("shop", shop)):
        history.record({"night": "2026-12-04T02:00:00Z", "recipe": name, "status": "built",
                        "digest": digest, "artifact": str(out / name)})  # fmt: skip
    _revoke(project / "keys/baker.key", out / "web", "web", web, "CVE-2026-1234 in <libfoo>")
    _revoke(project / "stranger/baker.key", out / "shop", "shop", shop, "not ours to say")
    return web, shop


def test_a_revocation_beside_out_is_recorded_before_tonights_build_replaces_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = History(str(project / "h.db"))
    web, _ = _last_night(project, history)
    night, said = _night(project, monkeypatch, history, project / "keys/baker.key")

    assert not (project / "out/web" / revocation.FILE).exists()  # web-2 replaced web-1
    revoked = {(r["recipe"], r["digest"]): r["revoked"] for r in history.all()}
    keyid = signing.fingerprint(signing.load_public_key(project / "keys/baker.pub"))
    assert revoked[("web", web)] == {
        "reason": "CVE-2026-1234 in <libfoo>",
        "revoked_at": "2026-12-05T09:30:00Z",
        "keyid": keyid,
        "says": f"revoked 2026-12-05 by key {keyid[:16]}: CVE-2026-1234 in <libfoo>",
    }
    assert [k for k, v in revoked.items() if v] == [("web", web)]  # not web-2, not shop
    assert [line for line in said if line.startswith("[shop]")] == [
        f"[shop] baker: {project / 'out/shop' / revocation.FILE}: "
        f"the DSSE envelope has no signature by key {keyid}; ignored"
    ]
    assert night > "2026-12-04"
    history.close()


def test_without_a_signing_key_a_revocation_is_said_and_not_trusted(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = History(str(project / "h.db"))
    _last_night(project, history)
    _, said = _night(project, monkeypatch, history, None)
    assert not any(r["revoked"] for r in history.all())
    assert f"[web] baker: {project / 'out/web' / revocation.FILE} is not checked: the " in (
        "\n".join(said)
    )
    history.close()


def test_the_public_key_is_the_private_keys_or_the_pub_beside_it(project: Path) -> None:
    pub = signing.fingerprint(signing.load_public_key(project / "keys/baker.pub"))
    (derived,) = lifecycle.signer_keys(project / "keys/baker.key")
    assert signing.fingerprint(derived) == pub
    (project / "keys/baker.key").write_text("-----BEGIN nothing\n")  # cannot be read
    (beside,) = lifecycle.signer_keys(project / "keys/baker.key")
    assert signing.fingerprint(beside) == pub
    (project / "keys/baker.pub").unlink()
    assert lifecycle.signer_keys(project / "keys/baker.key") == []
    assert lifecycle.signer_keys(None) == []


# --- the report -----------------------------------------------------------------------------


def _cell(html: str, row_id: str) -> str:
    return html[html.index(f'id="{row_id}"') :]


def test_the_report_strikes_a_revoked_image_through_with_its_reason(tmp_path: Path) -> None:
    history = History(str(tmp_path / "h.db"))
    bad, good = "sha256:" + "b" * 64, "sha256:" + "c" * 64
    for night, name, status, digest in (
        ("2026-12-03T02:00:00Z", "web", "built", bad),
        ("2026-12-04T02:00:00Z", "web", "unchanged", bad),
        ("2026-12-03T02:00:00Z", "db", "built", bad.replace("b", "d")),
        ("2026-12-04T02:00:00Z", "db", "built", good),
    ):
        history.record({"night": night, "recipe": name, "status": status, "digest": digest})
    said = revocation.Revocation("web", bad, "CVE-2026-1234 in <libfoo> & co", WHEN.isoformat(),
                                 "f" * 64, {})  # fmt: skip
    old_db = revocation.Revocation("db", bad.replace("b", "d"), "wrong base", WHEN.isoformat(),
                                   "e" * 64, {})  # fmt: skip
    lifecycle.record_revoked(history, [("web", said), ("db", old_db)])
    site = tmp_path / "site"
    index = report.write(history, "2026-12-04T02:00:00Z", site).read_text()

    struck = (
        f'<del class="revoked">{bad[:19]}</del> revoked 2026-12-05 by key {"f" * 16}: '
        "CVE-2026-1234 in &lt;libfoo&gt; &amp; co"
    )
    images = _cell(index, "images")
    assert f'<td class="unchanged">unchanged: {struck}</td>' in images
    assert images.count("<del") == 1  # db's last good image is not revoked
    news = index[index.index('id="news"') : index.index('id="images"')]
    assert f"web {bad[:19]}, the last good image, is revoked 2026-12-05" in news
    assert "&lt;libfoo&gt;" in news and "<libfoo>" not in index

    web = _cell((site / "web.html").read_text(), "nights")
    assert web.count(struck) == 2  # both nights of the revoked image
    db = _cell((site / "db.html").read_text(), "nights")
    rows = re.findall(r"<tr>.*?</tr>", db, re.S)[1:]
    assert ["<del" in r for r in rows] == [False, True]  # newest first: only the old image
    assert "wrong base" in rows[1]
    history.close()
