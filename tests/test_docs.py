"""The documentation stays true to the code: every command, build option, step, artifact file,
recipe field and package the code has is in the docs, and every link in them leads to a file
of this repository (a user's clone has nothing beside it)."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from baker import artifact
from baker.backends.fake import FakeBackend
from baker.build.options import FLAGS
from baker.build.pipeline import steps
from baker.cli import app  # importing baker.cli registers every command on the app
from baker.recipe.spec import Base, Ec2Backend, LibvirtBackend, Recipe, Spec

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _text(name: str) -> str:
    return (DOCS / name).read_text()


def test_every_link_stays_in_the_repository() -> None:
    for page in [ROOT / "README.md", *DOCS.glob("*.md"), ROOT / "bench" / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path = (page.parent / target).resolve()
            assert path.is_relative_to(ROOT), f"{page.name} links outside: {target}"
            assert path.exists(), f"{page.name} links to a missing {target}"


def test_every_command_is_in_the_cli_page() -> None:
    text = _text("cli.md")

    def names(group: object, prefix: str) -> list[str]:
        out = []
        for name, command in getattr(group, "commands", {}).items():
            out += (
                names(command, f"{prefix} {name}")
                if hasattr(command, "commands")
                else [f"{prefix} {name}"]
            )
        return out

    missing = [n for n in names(typer.main.get_command(app), "baker") if n not in text]
    assert missing == []


def test_every_build_option_is_in_the_cli_page() -> None:
    text = _text("cli.md")
    assert [f.flag for f in FLAGS if f"`{f.flag}" not in text] == []


def test_every_step_of_every_backend_is_in_the_architecture_page() -> None:
    text = _text("architecture.md")
    child = Recipe(name="child", base=Base(image="p", sha256="0" * 64))
    specs = [Spec(r, Path("r.yaml"), "0" * 64, "0" * 64) for r in (Recipe(name="r"), child)]
    backends = (FakeBackend(), FakeBackend(starts_from="debian", hands_back="disk"))
    names = {s.name for b in backends for spec in specs for s in steps(spec, b)}
    assert sorted(n for n in names if f"**{n}**" not in text) == []


def test_every_artifact_file_is_in_the_artifact_page() -> None:
    text = _text("artifact.md")
    files = [v for k, v in vars(artifact).items() if (k.isupper() and isinstance(v, str)
             and "." in v) or k == "SUMS"]  # fmt: skip
    assert files and [f for f in files if f"`{f}`" not in text] == []


def test_every_recipe_field_is_in_the_recipe_page() -> None:
    text = _text("recipe.md")
    fields = [f for f in Recipe.model_fields if f not in ("base", "backend", "nightly")]
    fields += [f"base.{f}" for f in Recipe.model_fields["base"].annotation.model_fields]  # type: ignore[union-attr]
    fields += [f"backend.{f}" for m in (LibvirtBackend, Ec2Backend) for f in m.model_fields]
    fields += [f"nightly.{f}" for f in Recipe.model_fields["nightly"].annotation.model_fields]  # type: ignore[union-attr]
    assert [f for f in fields if f"`{f}" not in text] == []


def test_the_folder_map_names_every_package() -> None:
    readme = (ROOT / "README.md").read_text()
    folder_map = readme[readme.index("## Development") :]
    baker = ROOT / "baker"
    packages = [f"{p.name}/" for p in baker.iterdir() if p.is_dir() and p.name != "__pycache__"]
    modules = [p.name for p in baker.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert [n for n in packages + modules if n not in folder_map] == []
