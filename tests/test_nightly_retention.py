"""`nightly.retention` without VMs: the recipe field and its mistakes, and the rules applied
after a night to the images the history knows of a recipe. The nightly keeps one image a
recipe in OUT; what stays of an earlier night's image is its rows and its SBOM copies in the
report, so an image the rules give up is marked pruned on its rows, said, dropped from the
report with its copies, and named in that night's news. Never the image in OUT, never one a
kept image (of any recipe) is built on."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from baker import artifact, recipe
from baker.artifact import Ancestor, BuildRecord, ImageRecord, ParentRecord, RecipeRef
from baker.build import parallel
from baker.build.options import Options
from baker.errors import InputError
from baker.lifecycle import retention
from baker.nightly import drift, lifecycle, mirror, report, run
from baker.nightly.history import History

# --- the recipe field ---------------------------------------------------------------------

BAD = [
    (
        "nightly:\n  retention:\n    keep_tags: [release-*]\n",
        "$recipe:3: nightly.retention: say what to keep: keep, older_than_days or both "
        "(got {'keep_tags': ['release-*']}).",
    ),
    (
        "nightly:\n  retention: {}\n",
        "$recipe:3: nightly.retention: say what to keep: keep, older_than_days or both (got {}).",
    ),
    (
        "nightly:\n  retention: {keep: 0}\n",
        "$recipe:3: nightly.retention.keep: must be at least 1 (got 0).",
    ),
    (
        "nightly:\n  retention:\n    keep: 2\n    older_than_days: -1\n",
        "$recipe:5: nightly.retention.older_than_days: must be at least 0 (got -1).",
    ),
    (
        "nightly:\n  retention: {keep: two}\n",
        "$recipe:3: nightly.retention.keep: expected an integer (got 'two').",
    ),
    (
        "nightly:\n  retention:\n    keeps: 3\n",
        "$recipe:4: nightly.retention.keeps: unknown field (did you mean keep?).",
    ),
    (
        "nightly:\n  retention:\n    keep: 3\n    keep_tags: release-*\n",
        "$recipe:5: nightly.retention.keep_tags: expected a list (got 'release-*').",
    ),
    (
        "nightly:\n  retention:\n    keep: 3\n    keep_tags: ['release 1']\n",
        "$recipe:5: nightly.retention.keep_tags.0: expected a tag or a pattern of tags like "
        "release-*: letters, digits, '.', '_', '-', ':' and the wildcards *, ? and [...] "
        "(got 'release 1').",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_a_retention_mistake_is_one_sentence_naming_line_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: demo\n{text}")
    with pytest.raises(InputError) as e:
        recipe.load(path)
    assert str(e.value) == expected.replace("$recipe", str(path))


def test_a_retention_is_the_rules_policy_and_none_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: demo\nnightly:\n  retention:\n    older_than_days: 30\n"
        "    keep_tags: [sha256:0f3c*, 2026-12-24T*]\n"
    )
    spec = recipe.load(path)
    assert spec.recipe.nightly.retention is not None
    assert lifecycle.policy(spec.recipe.nightly.retention) == retention.Policy(
        None, 30.0, ("sha256:0f3c*", "2026-12-24T*")
    )
    path.write_text("name: plain\n")
    plain = recipe.load(path)
    assert plain.recipe.nightly.retention is None
    assert lifecycle.policies([spec, plain, None]) == {
        "demo": retention.Policy(None, 30.0, ("sha256:0f3c*", "2026-12-24T*"))
    }


# --- the rules after a night ----------------------------------------------------------------

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _night(days_ago: float) -> str:
    return (NOW - dt.timedelta(days=days_ago)).strftime(lifecycle.NIGHT)


def _digest(label: str) -> str:
    return f"sha256:{hashlib.sha256(label.encode()).hexdigest()}"


def _artifact(directory: Path, name: str, label: str, parent: list[str] | None = None) -> str:
    """What a build leaves for the night to read: an image file, an SBOM and a real
    build.json (a child's names its parent, then the parent's ancestors, by digest)."""
    directory.mkdir(parents=True)
    (directory / artifact.IMAGE).write_bytes(label.encode())
    digest = f"sha256:{hashlib.sha256(label.encode()).hexdigest()}"
    (directory / artifact.SBOM_CDX).write_text(json.dumps({"components": []}))
    lineage = None
    if parent:
        lineage = ParentRecord(
            name="base", digest=parent[0], provenance_digest=_digest("prov"),
            source="recipe:base.yaml", signer="0" * 64,
            ancestors=[Ancestor(name="root", digest=d) for d in parent[1:]],
        )  # fmt: skip
    record = BuildRecord(
        baker_version="test",
        recipe=RecipeRef(name=name, file=f"{name}.yaml", digest=_digest(name)),
        image=ImageRecord(file=artifact.IMAGE, digest=digest),
        parent=lineage,
    )
    (directory / artifact.BUILD).write_bytes(record.dump())
    return digest


def _row(history: History, night: str, name: str, digest: str, **more: object) -> None:
    history.record({"night": night, "recipe": name, "status": "built", "digest": digest,
                    "artifact": f"/out/{name}", **more})  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "base.yaml").write_text("name: base\nnightly:\n  retention: {keep: 1}\n")
    (tmp_path / "app.yaml").write_text("name: app\n")
    return tmp_path


def test_after_a_night_the_rules_prune_earlier_images_but_never_one_a_kept_child_is_on(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """base keeps 1 image: tonight's b4. b3 goes; b2 stays, as tonight's app image is built
    on it (its build.json says so); b1 stays, as an earlier app image (app has no rules, so
    it keeps every image) is built on it."""
    out, site = project / "out", project / "site"
    history = History(str(project / "h.db"))
    b1, b2, b3 = _digest("b1"), _digest("b2"), _digest("b3")
    _row(history, _night(40), "base", b1)
    _row(history, _night(39), "app", _digest("a1"), ancestors=[b1])
    _row(history, _night(30), "base", b2)
    _row(history, _night(20), "base", b3)
    assert _artifact(out / "base", "base", "b3") == b3  # OUT holds last night's image
    report.write(history, _night(20), site)
    for n in (40, 30, 20):  # the report's copies of each night's SBOMs
        (site / "base" / _night(n).replace(":", "")).mkdir(parents=True, exist_ok=True)

    def builds(
        jobs: Sequence[parallel.Job], limit: int, say: Callable[[str], None]
    ) -> list[parallel.Job]:
        for job in jobs:
            tonight = Path(next(a[6:] for a in job.argv if a.startswith("--out=")))
            parent = [b2] if job.name == "app" else None
            job.digest = _artifact(tonight / job.name, job.name, f"{job.name}-4", parent)
            job.code = 0
        return list(jobs)

    monkeypatch.setattr(parallel, "run_all", builds)
    monkeypatch.setattr(mirror, "compare", lambda *a: None)
    monkeypatch.setattr(drift, "report", lambda old, new: None)
    said: list[str] = []
    recipes = [project / "base.yaml", project / "app.yaml"]
    night, nights = run.run(recipes, out, history, Options(), 1, said.append)

    assert {n.name: n.status for n in nights} == {"base": "built", "app": "built"}
    rows = history.all()
    assert next(r for r in rows if r["night"] == night and r["recipe"] == "app")["ancestors"] == [
        b2
    ]
    pruned = {r["digest"]: r["pruned"] for r in rows if r.get("pruned")}
    assert pruned == {b3: {"night": night, "why": "not one of the newest 1 of base"}}
    assert said == [
        f"[base] baker: retention: removed {b3[:19]} (built {_night(20)}): "
        "not one of the newest 1 of base"
    ]
    assert artifact.read_record(out / "base").image.digest == _digest("base-4")

    index = report.write(history, night, site).read_text()
    assert f"base: the retention removed {b3[:19]}, built {_night(20)} (not one of the " in index
    left = sorted(p.name for p in (site / "base").iterdir())  # b3's copies are gone
    assert left == sorted(n.replace(":", "") for n in (_night(40), _night(30), night))
    page = (site / "base.html").read_text()
    assert f"removed by the retention on {night}: not one of the newest 1 of base" in page
    history.close()


def test_age_tags_and_a_history_from_before_ancestors_were_recorded(tmp_path: Path) -> None:
    """older_than_days keeps the young; a keep tag matches an image's digest or one of its
    nights; a child recorded before ancestors were (only its parent's name) still keeps the
    parent's image of that night."""
    history = History(str(tmp_path / "h.db"))
    old, tagged, pinned, parent, young = (_digest(x) for x in ("old", "t", "p", "par", "y"))
    _row(history, _night(50), "web", old)
    _row(history, _night(45), "web", tagged)
    _row(history, _night(44), "web", pinned)
    _row(history, _night(42), "web", parent)
    _row(history, _night(42), "shop", _digest("shop"), parent="web")  # ancestors: NULL
    history.record({"night": _night(41), "recipe": "web", "status": "unchanged",
                    "digest": parent})  # fmt: skip
    history.record({"night": _night(3), "recipe": "web", "status": "failed"})
    _row(history, _night(2), "web", young)
    policy = retention.Policy(None, 7.0, (_night(45)[:10] + "T*", pinned[:12] + "*"))
    said: list[str] = []
    gone = lifecycle.prune(history, {"web": policy}, _night(0), said.append)

    assert [(g.image, g.built) for g in gone] == [(old, _night(50))]
    assert gone[0].why == "built 50.0 days ago"
    assert len(said) == 1
    marked = {r["digest"] for r in history.all() if r.get("pruned")}
    assert marked == {old}
    # Pruned once: the next night decides over what is left, and changes nothing.
    assert lifecycle.prune(history, {"web": policy}, _night(-1), said.append) == []
    history.close()


def test_the_image_in_out_is_kept_however_old(tmp_path: Path) -> None:
    history = History(str(tmp_path / "h.db"))
    first, current = _digest("first"), _digest("current")
    _row(history, _night(90), "web", first)
    _row(history, _night(80), "web", current)
    history.record({"night": _night(1), "recipe": "web", "status": "unchanged",
                    "digest": current})  # fmt: skip
    policy = retention.Policy(None, 30.0)
    gone = lifecycle.prune(history, {"web": policy}, _night(0), lambda s: None)
    assert [g.image for g in gone] == [first]
    history.close()
