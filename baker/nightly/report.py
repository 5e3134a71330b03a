"""The report site: static HTML from the history, readable offline (no CDN, no JavaScript).

index.html says last night's news first (what was built, what failed, which upgrades fixed
CVEs), then one row an image; NAME.html draws boot time (with each night's min-max band),
size, package count and (for a scanned image) its open fixable vulnerabilities over the
nights as SVG, the time each fix took to reach the image, and each night's drift report with
links to that night's SBOMs, copied beside the page. A revoked image is struck through with
its reason; an image the recipe's retention no longer keeps (baker.nightly.lifecycle) loses
its nights' copies here, and tonight's news names it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from baker import artifact
from baker.hashing import BAKER_DIR
from baker.nightly import drift, patching
from baker.nightly.history import History
from baker.nightly.svg import Point, chart


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(BAKER_DIR.parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _when(night: str) -> str:
    """A night's id as a chart label: month, day and time (nights can come hours apart)."""
    return night[5:16].replace("T", " ")


def _size(n: int | None) -> str:
    return f"{n / 1e6:.1f} MB" if n else "—"


def write(history: History, night: str, directory: Path) -> Path:
    """Write the site for every recipe in `history` into `directory`; returns index.html."""
    directory.mkdir(parents=True, exist_ok=True)
    env = _env()
    images, news = [], []
    counts = {"built": 0, "unchanged": 0, "failed": 0}
    for name in history.recipes():
        rows = history.all(name)
        tonight = [r for r in rows if r["night"] == night]
        last = tonight[-1] if tonight else rows[-1]
        good = [r for r in rows if r["status"] in ("built", "unchanged")]
        latest = good[-1] if good else last
        if tonight:
            counts[last["status"]] = counts.get(last["status"], 0) + 1
            news += _news(name, last)
            news += _lifecycle_news(name, night, latest, rows)
        changed = next((r["night"] for r in reversed(rows) if r["status"] == "built"), None)
        images.append(
            {
                "name": name,
                "page": f"{name}.html",
                "status": last["status"],
                "error": _note(last.get("error"), latest),
                "digest": latest.get("digest"),
                "size": _size(latest.get("size")),
                "boot": f"{latest['boot_median_s']:.1f} s" if latest.get("boot_median_s") else "—",
                "changed": changed,
                "signer": latest.get("signer"),
                "parent": last.get("parent"),
                "vulns": _open(latest, rows),
            }
        )
        _image_page(env, directory, name, rows)
    images = as_tree(images)
    index = directory / "index.html"
    index.write_text(
        env.get_template("report/index.html.j2").render(
            night=night, images=images, news=news, counts=counts
        )
    )
    return index


def as_tree(images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The images in tree order: each parent followed by the images built on it (`depth`
    deeper), by name at each level; an image whose parent is not in the history is a root."""
    names = {i["name"] for i in images}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for image in sorted(images, key=lambda i: i["name"]):
        parent = image.get("parent") if image.get("parent") in names else None
        children.setdefault(parent, []).append(image)
    ordered: list[dict[str, Any]] = []

    def visit(parent: str | None, depth: int) -> None:
        for image in children.get(parent, []):
            if any(o is image for o in ordered):
                continue  # a history that once held a cycle: each image once
            ordered.append({**image, "depth": depth})
            visit(image["name"], depth + 1)

    visit(None, 0)
    placed = {o["name"] for o in ordered}
    ordered += [{**i, "depth": 0} for i in images if i["name"] not in placed]
    return ordered


def _open(latest: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The index's cell: the latest image's open fixable findings, and the median time to
    patch over the nights."""
    v = latest.get("vulns")
    if not isinstance(v, dict):
        return "not scanned"
    days = patching.median_days(patching.patches(rows))
    patched = f", patched in {days:g} days (median)" if days is not None else ""
    return f"{v['fixable']} fixable, {v['no_fix']} without a fix{patched}"


def _note(error: str | None, row: dict[str, Any]) -> Markup | None:
    """What the status cell says after the status: the error, then the image's life since:
    revoked (its digest struck through, and the reason), or no longer kept."""
    parts = [escape(error)] if error else []
    revoked, pruned = row.get("revoked"), row.get("pruned")
    if isinstance(revoked, dict):
        struck = Markup('<del class="revoked">{}</del> {}')
        parts.append(struck.format((row.get("digest") or "")[:19], revoked.get("says")))
    if isinstance(pruned, dict):
        parts.append(escape(f"removed by the retention on {pruned['night']}: {pruned['why']}"))
    return Markup("; ").join(parts) if parts else None


def _lifecycle_news(
    name: str, night: str, latest: dict[str, Any], rows: list[dict[str, Any]]
) -> list[str]:
    """The image in OUT is revoked; the retention removed images tonight."""
    news = []
    if isinstance(revoked := latest.get("revoked"), dict):
        news.append(f"{name} {latest['digest'][:19]}, the last good image, is {revoked['says']}")
    removed: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if (r.get("pruned") or {}).get("night") == night:
            removed.setdefault(r["digest"], []).append(r)
    for digest, its in removed.items():
        built, why = its[0]["night"], its[0]["pruned"]["why"]
        news.append(f"{name}: the retention removed {digest[:19]}, built {built} ({why})")
    return news


def _news(name: str, row: dict[str, Any]) -> list[str]:
    if row["status"] == "failed":
        return [f"{name} failed: {row.get('error') or 'see the CI log'}"]
    on = f" on {row['parent']}" if row.get("parent") else ""
    if row["status"] != "built":
        return []
    d = row.get("drift")
    if not d:
        return [f"{name} built for the first time{on}"]
    pkgs = d.get("packages") or {}
    ups = pkgs.get("upgraded") or []
    parts = []
    if ups:
        cves = sorted({c for u in ups for c in u.get("cves") or []})
        fixing = f", fixing {', '.join(cves[:8])}" + (" …" if len(cves) > 8 else "") if cves else ""
        parts.append(f"{len(ups)} packages upgraded{fixing}")
    for key, verb in (("added", "added"), ("removed", "removed")):
        if pkgs.get(key):
            parts.append(f"{len(pkgs[key])} packages {verb}")
    if d.get("files_changed"):
        paths = ", ".join(f["path"] for f in (d.get("files") or [])[:3])
        more = " …" if d["files_changed"] > 3 else ""
        parts.append(f"{d['files_changed']} files changed ({paths}{more})")
    what = "; ".join(parts) or "same packages and files, new bytes"
    return [f"{name} rebuilt{on}: {what}"]


def _image_page(
    env: jinja2.Environment, directory: Path, name: str, rows: list[dict[str, Any]]
) -> None:
    good = [r for r in rows if r["status"] in ("built", "unchanged") and r.get("digest")]
    boot = [
        Point(_when(r["night"]), r["boot_median_s"], r.get("boot_min_s"), r.get("boot_max_s"))
        for r in good
        if r.get("boot_median_s") is not None
    ]
    size = [Point(_when(r["night"]), round(r["size"] / 1e6, 1)) for r in good if r.get("size")]
    pkgs = [Point(_when(r["night"]), r["packages"]) for r in good if r.get("packages")]
    fixable = [Point(_when(r["night"]), r["vulns"]["fixable"]) for r in good if r.get("vulns")]
    charts = [
        {
            "svg": chart(f"{name}: time to SSH", " s", boot),
            "caption": "time to SSH (median, min-max of runs)",
        },
        {"svg": chart(f"{name}: image size", " MB", size), "caption": "image size"},
        {"svg": chart(f"{name}: packages", "", pkgs), "caption": "packages"},
    ]
    if fixable:  # an image that is scanned (scan.db)
        title = f"{name}: vulnerabilities with a fix"
        charts.append({"svg": chart(title, "", fixable),
                       "caption": "open vulnerabilities with a fix in the suite"})  # fmt: skip
    nights = []
    for r in reversed(rows):
        nights.append(
            {
                "night": r["night"],
                "status": r["status"],
                "error": _note(r.get("error"), r),
                "digest": r.get("digest"),
                "drift_text": drift.render(name, r["drift"]) if r.get("drift") else "",
                "sboms": _sboms(directory, name, r),
            }
        )
    page = env.get_template("report/image.html.j2").render(
        name=name, charts=charts, nights=nights, patches=patching.patches(rows)
    )
    (directory / f"{name}.html").write_text(page)


def _holds(directory: Path, row: dict[str, Any]) -> bool:
    """Whether the artifact directory still holds that night's image (OUT/NAME moves on)."""
    try:
        return artifact.read_record(directory).image.digest == row.get("digest")
    except Exception:
        return False


def _sboms(directory: Path, name: str, row: dict[str, Any]) -> list[tuple[str, str]]:
    """That night's SBOMs, copied beside the page once (the artifact moves on; they stay)."""
    night_dir = directory / name / row["night"].replace(":", "")
    if row.get("pruned"):  # no longer kept: its copies go, once
        if night_dir.parent == directory / name and night_dir.is_dir():
            shutil.rmtree(night_dir)
        return []
    if row["status"] != "built" or not row.get("artifact"):
        return []
    links = []
    for label, file in (("CycloneDX", artifact.SBOM_CDX), ("SPDX", artifact.SBOM_SPDX)):
        target = night_dir / file
        source = Path(row["artifact"]) / file
        if not target.exists() and source.is_file() and _holds(Path(row["artifact"]), row):
            night_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        if target.exists():
            links.append((label, str(target.relative_to(directory))))
    return links
