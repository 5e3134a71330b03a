"""Layered images for real: the shipped org-base baked, org-app locked (its own package pinned
as it installs on org-base) and baked on the signed org-base artifact (its tree read back,
nothing made again from packages), verified with its lineage, exported with its sources and
its parent and rebuilt offline from the bundle to the same digest, diffed against its
parent, and built again on org-base's registry reference, unlocked (pushed, the child pushed
and pulled, then refused once the parent is revoked), and on its tag, locked (the lock pins
the tag). The refusals (another digest, signer, a flipped byte, ...) are shown on small
artifacts in tests/test_parent.py.

The smallest images that show it: the shipped recipes, BIOS only and without cloud-init (the
session's BIOS base is the nightly's and the farm's: these images show that a base without
cloud-init builds, boots and is measured) and one measured boot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import registry_server
from support.bakerun import BAKER, OFFLINE, ROOT, baker, run_baker, sha256

pytestmark = pytest.mark.e2e


def _smallest(text: str, parent: bool) -> str:
    # cloud_init is the parent's tree's to decide: a child does not write it.
    base = "base:\n  boot: bios\n" + ("  cloud_init: false\n" if parent else "")
    return text.replace("base:\n", base, 1) + "boot_runs: 1\n"


@pytest.fixture(scope="module")
def layers(
    tmp_path_factory: pytest.TempPathFactory, work_root: Path, signing_key: Path
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("layers")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    shutil.copytree(ROOT / "provisioners", root / "provisioners")
    shutil.copytree(ROOT / "images" / "testinfra", root / "images" / "testinfra")
    for name in ("org-base", "org-app"):
        text = (ROOT / "images" / f"{name}.yaml").read_text()
        (root / "images" / f"{name}.yaml").write_text(_smallest(text, name == "org-base"))
    (root / "keys").mkdir()
    shutil.copy(signing_key.with_name("baker.pub"), root / "keys" / "baker.pub")
    out = root / "out"
    base = run_baker("build", root / "images" / "org-base.yaml", "--out", out,
                     "--sign-key", signing_key, work=work_root)  # fmt: skip
    assert base.returncode == 0, base.stderr[-3000:]
    digest = base.stdout.split()[-1]
    # Unlocked, a copy: its own package is resolved against the build machine's dpkg database.
    shutil.copy(root / "images" / "org-app.yaml", root / "images" / "org-app-unlocked.yaml")
    pinned = ("--var", f"org_base_sha256={digest.removeprefix('sha256:')}")
    # Locked: its own package pinned as it installs on the verified parent image.
    locked = run_baker("lock", root / "images" / "org-app.yaml", *pinned, work=work_root)
    assert locked.returncode == 0, locked.stderr[-3000:]
    assert locked.stdout.rstrip().endswith(
        f"org-app.lock: 1 package of its own, {locked.stdout.split()[-1]}"
    )
    app = run_baker("build", root / "images" / "org-app.yaml", "--out", out, "--sign-key",
                    signing_key, *pinned, work=work_root)  # fmt: skip
    assert app.returncode == 0, app.stderr[-3000:]
    return {"root": root, "base": out / "org-base", "app": out / "org-app",
            "base_digest": digest, "app_digest": app.stdout.split()[-1],
            "app_stderr": app.stderr, "pinned": pinned}  # fmt: skip


def baker_cmd(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BAKER), *map(str, args)], capture_output=True, text=True,
                          check=False)  # fmt: skip


def test_the_child_is_built_on_its_verified_parent(layers: dict[str, Any]) -> None:
    said = layers["app_stderr"]
    assert f"on the parent image org-base {layers['base_digest']}, verified" in said
    assert "mmdebstrap" not in said  # nothing made again from packages
    record = json.loads((layers["app"] / "build.json").read_text())
    parent = record["parent"]
    assert parent["name"] == "org-base" and parent["digest"] == layers["base_digest"]
    assert parent["provenance_digest"] == f"sha256:{sha256(layers['base'] / 'provenance.json')}"
    # The parent's content and the child's both passed their tests in the child.
    assert record["tests"]["tests"] >= 6 and record["tests"]["failures"] == 0
    statement = json.loads((layers["app"] / "provenance.json").read_text())
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert {"sha256": layers["base_digest"].removeprefix("sha256:")} in [
        d.get("digest") for d in deps if d["name"] == "parent-image"
    ]
    checked = baker_cmd("verify", layers["app"], "--pub", layers["root"] / "keys" / "baker.pub")
    assert checked.returncode == 0, checked.stdout
    assert "ok   lineage: built on org-base sha256:" in checked.stdout
    shown = baker_cmd("inspect", layers["app"])
    assert (
        f"lineage   org-app {layers['app_digest']} ← org-base {layers['base_digest']} ← "
        "debian bookworm/amd64"
    ) in shown.stdout
    cdx = json.loads((layers["app"] / "sbom.cdx.json").read_text())
    layer = {c["name"]: p["value"] for c in cdx["components"] for p in c["properties"]
             if p["name"] == "baker:layer"}  # fmt: skip
    # Its own package (base.packages, fetched on the host and installed on the parent's
    # tree) is marked added; every other one came from the parent.
    assert {n for n, v in layer.items() if v == "added"} == {"tree"}
    assert set(layer.values()) == {"parent", "added"}
    # The parent's tree has no cloud-init (base.cloud_init: false), nor what it pulls in.
    assert not {"cloud-init", "python3"} & set(layer)
    assert "packages of its own: tree 2.1.0-1" in said


def test_the_childs_bundle_carries_its_parent_and_rebuilds_offline_to_the_same_digest(
    layers: dict[str, Any], tmp_path: Path, work_root: Path
) -> None:
    """Exported with its sources, the child carries its parent (verified again, with the key
    that verified it); imported into a fresh package cache, it rebuilds with the mirror and
    the parent's directory out of reach, on the parent it carried."""
    bundle, into, cache = tmp_path / "app.tar", tmp_path / "imported", tmp_path / "cache"
    pub = layers["root"] / "keys" / "baker.pub"
    exported = baker("export", layers["app"], "--to", bundle, "--with-sources", "--pub", pub,
                     cache=Path(os.environ["BAKER_CACHE_DIR"]), work=work_root)  # fmt: skip
    assert "with sources" in exported.stdout
    imported = baker("import", bundle, "--into", into, "--pub", pub, cache=cache,
                     work=work_root, env=OFFLINE)  # fmt: skip
    assert "ok   parent: org-base sha256:" in imported.stdout
    # The rebuild as the import says to run it.
    command = imported.stdout.split("rebuild offline: baker ", 1)[1].split()
    shutil.move(layers["base"], tmp_path / "away")  # only the carried parent is left
    try:
        rebuilt = baker(*command, cache=cache, work=work_root, env=OFFLINE,
                        check=False)  # fmt: skip
    finally:
        shutil.move(tmp_path / "away", layers["base"])
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr[-3000:]
    assert rebuilt.stdout.startswith("reproduced"), rebuilt.stdout
    assert f"on the parent image org-base {layers['base_digest']}, verified" in rebuilt.stderr


def test_diff_says_what_the_child_added(layers: dict[str, Any]) -> None:
    proc = baker_cmd("diff", layers["base"], layers["app"], "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert [(p["name"], p["old"]) for p in d["packages"]] == [("tree", None)]
    added = {f["path"] for f in d["files"] if f["kind"] == "added"}
    assert "/etc/org-app.conf" in added


def test_rebuild_check_names_the_file_a_changed_recipe_makes_differ(
    layers: dict[str, Any], work_root: Path
) -> None:
    """A recipe changed since the build: `rebuild --check` makes every step again, in a step
    cache of its own, and names the file that differs in the image. The smallest rebuild that
    shows it: the child's, on its parent (nothing made from packages)."""
    recipe = layers["root"] / "images" / "org-app.yaml"
    saved = recipe.read_bytes()
    try:
        recipe.write_text(saved.decode().replace("APP=org-app", "APP=org-app-changed"))
        changed = baker("rebuild", "--check", layers["app"], cache=Path(os.environ[
            "BAKER_CACHE_DIR"]), work=work_root, check=False)  # fmt: skip
    finally:
        recipe.write_bytes(saved)  # the registry test builds it as it was
    assert changed.returncode == 1, changed.stderr[-3000:]
    assert changed.stdout.startswith(
        f"NOT reproduced: {layers['app']} has {layers['app_digest']}"
    ), changed.stdout
    assert "/etc/org-app.conf" in changed.stdout
    assert "(the recipe changed since the artifact was built)" in changed.stdout


def test_a_child_built_on_its_parents_registry_reference_is_pushed_and_pulled_verified(
    layers: dict[str, Any], tmp_path: Path, work_root: Path, signing_key: Path
) -> None:
    registry = registry_server.start(tmp_path / "registry", tls=False)
    try:
        pushed = baker_cmd("push", layers["base"], f"{registry.host}/golden/org-base:1")
        assert pushed.returncode == 0, pushed.stderr[-2000:]
        reference = pushed.stdout.split()[-1]  # HOST/golden/org-base:1@sha256:<manifest>
        root = layers["root"]
        # Unlocked: tree resolved on the host against the build machine's own dpkg database.
        built = run_baker("build", root / "images" / "org-app-unlocked.yaml", "--out",
                          tmp_path / "out", "--sign-key", signing_key, "--var",
                          f"org_base={reference}", *layers["pinned"], work=work_root)  # fmt: skip
        assert built.returncode == 0, built.stderr[-3000:]
        assert "packages of its own: tree 2.1.0-1" in built.stderr
        assert f"pulling the parent image {registry.host}/golden/org-base@sha256:" in built.stderr
        # The same parent and pins as the build on the local artifact: the same image.
        assert built.stdout.split()[-1] == layers["app_digest"]
        child = tmp_path / "out" / "org-app"
        source = json.loads((child / "build.json").read_text())["parent"]["source"]
        assert source == reference.replace(":1@", "@")
        # By the tag, locked: the lock pins the manifest the tag names and tree's .deb as it
        # installs on org-base; the locked build installs that file (the files are org-app's
        # lock's: its provisioning is reused from the step cache), to the same image.
        tagged = root / "images" / "org-app-tagged.yaml"
        shutil.copy(root / "images" / "org-app.yaml", tagged)
        on_tag = ("--var", f"org_base={reference.split('@')[0]}", *layers["pinned"])
        locked = run_baker("lock", tagged, *on_tag, work=work_root)
        assert locked.returncode == 0, locked.stderr[-3000:]
        assert f"pinned at {reference.split('@')[1]}, 1 package of its own" in locked.stdout
        assert "'tree'" in tagged.with_suffix(".lock").read_text()
        again = run_baker("build", tagged, "--out", tmp_path / "locked", "--sign-key",
                          signing_key, *on_tag, work=work_root)  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stdout.split()[-1] == layers["app_digest"]
        record = json.loads((tmp_path / "locked" / "org-app" / "build.json").read_text())
        assert record["steps"]["provision"]["status"] in ("reused", "skipped")
        pins = record["pins"]
        assert list(pins["debs"]) == ["tree"] and pins["lock"] is not None
        app = baker_cmd("push", child, f"{registry.host}/apps/org-app:1")
        assert app.returncode == 0, app.stderr[-2000:]
        pub = root / "keys" / "baker.pub"
        pulled = baker_cmd("pull", app.stdout.split()[-1], "--into", tmp_path / "pulled",
                           "--pub", pub)  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr[-2000:]
        checked = baker_cmd("verify", tmp_path / "pulled", "--pub", pub)
        assert checked.returncode == 0, checked.stdout
        assert f"ok   lineage: built on org-base {layers['base_digest'][:19]}" in checked.stdout
        # The parent turns out bad: revoked in its repository, the child that names it is
        # refused by pull and by an online verify, before its disk is fetched.
        revoked = baker_cmd("revoke", reference, "--reason", "CVE-2026-0001 in the base",
                            "--sign-key", signing_key)  # fmt: skip
        assert revoked.returncode == 0, revoked.stderr[-2000:]
        refused = baker_cmd("pull", app.stdout.split()[-1], "--into", tmp_path / "again",
                            "--pub", pub)  # fmt: skip
        assert refused.returncode == 1 and not (tmp_path / "again").exists()
        said = refused.stderr.strip().splitlines()[-1]
        assert f"refused, org-app is built on org-base ({layers['base_digest'][:19]})" in said
        assert said.endswith(": CVE-2026-0001 in the base.")
        online = baker_cmd("verify", tmp_path / "pulled", "--pub", pub, "--online", reference)
        assert online.returncode == 1 and "FAIL revocation: org-app is built on" in online.stdout
    finally:
        registry.stop()
