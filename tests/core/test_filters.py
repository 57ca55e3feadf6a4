"""Filters as data (fmn_core.filters): the public JSON form and its validation."""

from __future__ import annotations

from typing import Any

import pytest

from fmn_core.errors import InvalidArgument
from fmn_core.filters import FilterDraft, Problems, check_filter_name, parse_filters
from fmn_core.rules import default_catalog


def test_parse_filters_reports_every_problem_with_its_path() -> None:
    document: Any = [
        {"name": "ok", "rules": [{"rule": "app_is", "args": {"app": "koji"}}]},
        {
            "name": "OK",
            "active": "yes",
            "colour": 1,
            "rules": [
                {"rule": "app_is", "args": {}},
                {"rule": "nope"},
                "text",
                {"rule": "triggered_by_me", "negated": 1},
                {"rule": "app_is", "args": []},
            ],
        },
        {"name": "\x00", "rules": "all"},
        7,
    ]
    problems: Problems = []
    drafts = parse_filters(document, "filters", default_catalog(), problems)
    paths = [path for path, _ in problems]
    assert paths == [
        "filters[1].colour",
        "filters[1].name",
        "filters[1].active",
        "filters[1].rules[0].args.app",
        "filters[1].rules[1].rule",
        "filters[1].rules[2]",
        "filters[1].rules[3].negated",
        "filters[1].rules[4].args",
        "filters[2].name",
        "filters[2].rules",
        "filters[3]",
    ]
    assert "already the name of filter 0" in problems[1][1]
    assert drafts[0] == FilterDraft("ok", True, False, drafts[0].rules)
    assert drafts[0].rules[0].arguments == {"app": "koji"}


def test_parse_filters_stores_module_references_by_short_name() -> None:
    problems: Problems = []
    drafts = parse_filters(
        [{"name": "f", "rules": [{"rule": "fmn_core.catalog:app_is", "args": {"app": "x"}}]}],
        "filters",
        default_catalog(),
        problems,
    )
    assert problems == [] and drafts[0].rules[0].name == "app_is"


def test_check_filter_name_strips_and_limits() -> None:
    assert check_filter_name("  my builds ") == "my builds"
    assert check_filter_name("x" * 100) == "x" * 100
    for bad in ("", "x" * 101, "a\u2028b", "a\tb", 3):
        with pytest.raises(InvalidArgument):
            check_filter_name(bad)
