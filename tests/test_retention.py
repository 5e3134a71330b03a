"""The keep rules `baker prune`, `prune --ec2` and the nightly share: each rule keeps what it
says, a kept image keeps its ancestors, and everything else may go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from baker.errors import InputError
from baker.lifecycle.retention import Candidate, Decision, Policy, decide

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def image(key: str, days_ago: float, name: str = "web", tags: tuple[str, ...] = (),
          ancestors: tuple[str, ...] = ()) -> Candidate:  # fmt: skip
    return Candidate(key, name, f"img-{key}", NOW - timedelta(days=days_ago), tags, ancestors)


def kept(decisions: list[Decision]) -> dict[str, bool]:
    return {d.candidate.key: d.keep for d in decisions}


def test_the_newest_n_of_each_name_are_kept() -> None:
    images = [image("a", 3), image("b", 2), image("c", 1), image("x", 9, name="base")]
    decisions = decide(images, Policy(keep=2), NOW)
    assert kept(decisions) == {"c": True, "b": True, "a": False, "x": True}
    assert [d.candidate.key for d in decisions] == ["x", "c", "b", "a"]  # by name, newest first
    assert decisions[-1].why == "not one of the newest 2 of web"


def test_with_an_age_too_only_images_both_rules_give_up_go() -> None:
    images = [image("a", 40), image("b", 10), image("c", 1)]
    assert kept(decide(images, Policy(keep=1, older_than_days=30), NOW)) == {
        "a": False, "b": True, "c": True}  # fmt: skip
    assert kept(decide(images, Policy(older_than_days=5), NOW)) == {
        "a": False, "b": False, "c": True}  # fmt: skip


def test_a_keep_tag_pattern_keeps_an_old_image() -> None:
    images = [image("a", 30, tags=("release-1",)), image("b", 20, tags=("nightly-2",)),
              image("c", 1)]  # fmt: skip
    decisions = decide(images, Policy(keep=1, keep_tags=("release-*",)), NOW)
    assert kept(decisions) == {"a": True, "b": False, "c": True}
    assert next(d.why for d in decisions if d.candidate.key == "a") == (
        "tag release-1 matches --keep-tag"
    )


def test_a_kept_child_keeps_its_parent_and_the_parents_ancestors() -> None:
    images = [
        image("root", 50, name="base"),
        image("p1", 40, name="org", ancestors=("img-root",)),
        image("p2", 1, name="org", ancestors=("img-root",)),
        image("newroot", 0.5, name="base"),
        image("app", 0.1, name="app", ancestors=("img-p1", "img-root")),
    ]
    decisions = decide(images, Policy(keep=1), NOW)
    assert kept(decisions) == {"root": True, "p1": True, "p2": True, "newroot": True,
                               "app": True}  # fmt: skip
    why = {d.candidate.key: d.why for d in decisions}
    assert why["p1"].startswith("the parent of kept app")
    with_old_app = [*images, image("app0", 60, name="app", ancestors=("img-p0",))]
    assert kept(decide(with_old_app, Policy(keep=1), NOW))["app0"] is False


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({}, "say what to keep: --keep N, --older-than DAYS or both."),
        ({"keep": 0}, "--keep 0: keep at least 1 image of each name."),
        ({"older_than_days": -1}, "--older-than -1: days cannot be negative."),
    ],
)
def test_a_policy_that_keeps_nothing_is_refused(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message.replace(".", r"\.").replace("-", r"\-")):
        Policy(**policy)
