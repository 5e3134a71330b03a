"""The leak check step (baker.security.leaks): after capture, before anything is imaged or
published, the captured tree is searched for the build's secret values, private keys, cloud
credentials, tokens, shell histories and undeclared authorized_keys. A finding fails the
build naming the files and kinds, never a value.

Its key is in the chain before the image's, so a cached image has passed this same check
(its rules, the allowlist, the names of the secrets) when it was made; the values are not in
the key (baker.build.secrets), as they are not in any record."""

from __future__ import annotations

import contextlib

from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.errors import BuildError
from baker.hashing import content_key
from baker.inspect import disk
from baker.recipe.spec import FileUpload, Spec
from baker.security import leaks

SHOWN = 10  # findings named in the error line; the count says how many more


def declared(spec: Spec) -> list[str]:
    """Files the recipe itself puts in the image (an authorized_keys among them is wanted)."""
    return [p.dest for p in spec.recipe.provisioners if isinstance(p, FileUpload)]


def leak_record(spec: Spec) -> dict[str, object]:
    """build.json's `leak_check`: what a later `baker scan --secrets` lets through too."""
    allow = [a.model_dump() for a in spec.recipe.leak_check.allow]
    return {"allow": allow, "declared": declared(spec)}


def failure(found: list[leaks.Leak], where: str) -> str:
    named = ", ".join(map(str, found[:SHOWN]))
    more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    return (
        f"the leak check found {len(found)} secret{'s' if len(found) != 1 else ''} in {where}: "
        f"{named}{more}; remove them in the provisioner that left them, or allow a path with "
        "a reason under leak_check.allow."
    )


class LeakCheck(Step):
    name = "leak-check"

    def describe(self, ctx: Context) -> str:
        n = len(ctx.secrets)
        own = f"{n} build secret{'s' if n != 1 else ''}, " if n else ""
        return f"{own}keys, credentials and tokens in the captured tree"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "secrets": sorted(ctx.spec.recipe.secrets),
            **leak_record(ctx.spec),
            "code": self.code_digest(),
        }
        return content_key("leak-check", config, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        checker = leaks.Checker(ctx.secrets, declared(ctx.spec), ctx.spec.recipe.leak_check.allow)
        if state.captured_tar is not None:
            found = leaks.check_tar(state.captured_tar, checker)
        else:  # a disk taken as it is: its image, opened read-only
            image = need(state.image, "the image").path
            with disk.scratch(ctx.work) as work, contextlib.ExitStack() as opened:
                found = leaks.check_tree(disk.open_image(image, "leak", work, opened).root,
                                         checker)  # fmt: skip
        if found:
            raise BuildError(failure(found, "the image, nothing was published"))
        ctx.reporter.info(
            f"no leaks in {checker.files} files ({checker.looked} of them not as a package "
            "shipped them, looked into for keys, credentials and tokens)"
        )
