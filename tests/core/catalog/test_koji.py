"""Koji's rules (fmn_core.catalog.koji) over real buildsys messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fmn_core.rules import Catalog

from .samples import changed, check, from_corpus


@pytest.fixture(scope="module")
def koji_build(corpus: list[str]) -> dict[str, Any]:
    return from_corpus(corpus, lambda d: d["topic"].endswith(".buildsys.build.state.change"))


@pytest.mark.parametrize(
    ("new", "completed", "failed", "state"),
    [
        (1, True, False, "COMPLETE"),
        (3, False, True, "FAILED"),
        (0, False, False, "BUILDING"),
        (4, False, False, "CANCELED"),
    ],
)
def test_koji_build_rules_follow_the_new_state(
    rules: Catalog, koji_build: dict[str, Any], new: int, completed: bool, failed: bool, state: str
) -> None:
    message = changed(koji_build, new=new)
    assert check(rules, "koji_build_completed", message) is completed
    assert check(rules, "koji_build_failed", message) is failed
    assert check(rules, "koji_build_state", message, state=state)
    other = "DELETED" if state != "DELETED" else "FAILED"
    assert not check(rules, "koji_build_state", message, state=other)


def test_koji_build_rules_ignore_other_topics_and_odd_states(
    rules: Catalog, koji_build: dict[str, Any]
) -> None:
    assert not check(
        rules,
        "koji_build_failed",
        changed(koji_build, "org.fedoraproject.prod.buildsys.tag", new=3),
    )
    assert not check(rules, "koji_build_failed", changed(koji_build, new="3"))
    assert not check(rules, "koji_build_completed", changed(koji_build, new=True))
    assert check(
        rules,
        "koji_build_failed",
        changed(koji_build, "org.fedoraproject.stg.buildsys.build.state.change", new=3),
    )


def test_koji_scratch_build_needs_a_finished_scratch_build_task(
    rules: Catalog, corpus: list[str]
) -> None:
    data = from_corpus(
        corpus,
        lambda d: (
            d["topic"].endswith(".buildsys.task.state.change")
            and "scratch" in json.dumps(d["body"].get("info", {}).get("request"))
        ),
    )
    assert check(rules, "koji_scratch_build", changed(data))  # new: CANCELED
    info = data["body"]["info"]
    not_scratch = {**info, "request": [*info["request"][:2], {"scratch": False}]}
    assert not check(rules, "koji_scratch_build", changed(data, info=not_scratch))
    assert not check(rules, "koji_scratch_build", changed(data, new="OPEN"))
    assert not check(rules, "koji_scratch_build", changed(data, method="buildArch"))


def test_koji_build_tagged_compares_the_tag(rules: Catalog, corpus: list[str]) -> None:
    data = from_corpus(corpus, lambda d: d["topic"] == "org.fedoraproject.prod.buildsys.tag")
    tag = data["body"]["tag"]
    assert check(rules, "koji_build_tagged", changed(data), tag=tag)
    assert not check(rules, "koji_build_tagged", changed(data), tag="f99-updates")
