"""The built-in catalog as a whole: the contract rules, help text, lookup, validation."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fmn_core.catalog
from fmn_core.errors import InvalidArgument
from fmn_core.rules import Catalog, Parameter, RuleSpec, default_catalog, specs_in

CONTRACT_RULES = (
    "app_is",
    "topic_matches",
    "severity_at_least",
    "pertains_to_me",
    "user_involved",
    "triggered_by_me",
    "triggered_by",
    "package_involved",
    "package_owned_by_me",
    "package_owned_by",
    "package_owned_by_group",
    "group_involved",
    "summary_contains",
)


def test_catalog_keeps_the_contract_rules(rules: Catalog) -> None:
    for name in CONTRACT_RULES:
        assert rules.get(name).ref == f"fmn_core.catalog:{name}"


def test_catalog_lists_every_rule_of_every_family_once() -> None:
    defined: set[str] = set()
    for info in pkgutil.iter_modules(fmn_core.catalog.__path__):
        family = importlib.import_module(f"fmn_core.catalog.{info.name}")
        defined |= {
            spec.name for spec in specs_in(family) if spec.function.__module__ == family.__name__
        }
    listed = [spec.name for spec in specs_in(fmn_core.catalog)]
    assert len(listed) == len(set(listed))
    assert set(listed) == defined


def test_catalog_display_order_is_the_listed_order(rules: Catalog) -> None:
    assert [spec.name for spec in rules] == [
        spec.name for spec in map(_spec, fmn_core.catalog.RULES)
    ]
    assert [spec.name for spec in rules][: len(CONTRACT_RULES)] == list(CONTRACT_RULES)


def test_catalog_rules_keep_their_names_whichever_file_holds_them(rules: Catalog) -> None:
    # Databases store built-in rules by short name or as fmn_core.catalog:name.
    for spec in rules:
        assert spec.ref == f"fmn_core.catalog:{spec.name}"
        assert rules.get(spec.ref) is spec
        assert spec.function.__module__.startswith("fmn_core.catalog.")


def _spec(function: Any) -> RuleSpec:
    found: RuleSpec = function.__fmn_rule__
    return found


def test_catalog_adds_at_least_twenty_application_rules(rules: Catalog) -> None:
    assert len(rules) >= len(CONTRACT_RULES) + 20


def test_catalog_rules_have_titles_help_and_valid_parameters(rules: Catalog) -> None:
    titles = set()
    for spec in rules:
        assert spec.title and spec.title not in titles, spec.name
        titles.add(spec.title)
        assert len(spec.help) > len(spec.title), f"{spec.name} needs a real docstring"
        assert "\n" not in spec.help
        for parameter in spec.parameters:
            assert parameter.help, f"{spec.name}: {parameter.name} needs help text"
            if parameter.kind == "choice":
                assert parameter.choices
        if spec.hint is not None:
            assert spec.hint.key in ("app", "topic", "username", "agent", "package", "group")


def test_default_catalog_includes_the_builtin_rules() -> None:
    built = default_catalog()
    assert "koji_build_failed" in built
    assert built.get("fmn_core.catalog:koji_build_failed").name == "koji_build_failed"


def test_catalog_search_finds_application_rules(rules: Catalog) -> None:
    names = {spec.name for spec in rules.search("copr")}
    assert {"copr_build_in_project", "copr_build_in_my_project", "copr_build_failed"} <= names
    assert {spec.name for spec in rules.search("koji failed")} >= {"koji_build_failed"}


@pytest.mark.parametrize(
    ("name", "arguments", "normalized"),
    [
        ("koji_build_state", {"state": "failed"}, {"state": "FAILED"}),
        ("bodhi_update_status", {"status": "Stable"}, {"status": "stable"}),
        ("bodhi_update_pushed", {"repository": "TESTING"}, {"repository": "testing"}),
        (
            "copr_build_in_project",
            {"project": "@python/python3.14"},
            {"project": "@python/python3.14"},
        ),
        (
            "meetbot_meeting_on_channel",
            {"channel": "#fedora-meeting"},
            {"channel": "#fedora-meeting"},
        ),
        ("fedocal_meeting", {"calendar": " Fedora Release "}, {"calendar": "Fedora Release"}),
        ("pagure_pr_on_project", {"project": "rpms/kernel"}, {"project": "rpms/kernel"}),
    ],
)
def test_catalog_validates_application_rule_arguments(
    rules: Catalog, name: str, arguments: dict[str, Any], normalized: dict[str, Any]
) -> None:
    assert rules.validate(name, arguments)[1] == normalized


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("koji_build_state", {"state": "exploded"}),
        ("koji_build_state", {}),
        ("bodhi_update_pushed", {"repository": "updates"}),
        ("copr_build_in_project", {"project": "@python/python 3"}),
        ("pagure_pr_on_project", {"project": "rpms kernel"}),
        ("koji_build_failed", {"package": "kernel"}),
    ],
)
def test_catalog_rejects_bad_application_rule_arguments(
    rules: Catalog, name: str, arguments: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgument):
        rules.validate(name, arguments)


@pytest.mark.parametrize(
    "value", ["a\x00b", "tab\there", "a\x1fb", "li\nne", "lone \ud800 surrogate", "\udfff"]
)
def test_text_arguments_refuse_control_characters_and_lone_surrogates(value: str) -> None:
    parameter = Parameter("pattern", "a pattern", kind="text")
    with pytest.raises(InvalidArgument, match="control characters"):
        parameter.validate("topic_matches", value)


@pytest.mark.parametrize("value", ["plain", " \x7f delete", "é\u2603\U0001f600", "\ue000"])
def test_text_arguments_keep_everything_else(value: str) -> None:
    assert Parameter("pattern", "a pattern", kind="text").validate("r", value) == value.strip()


@pytest.mark.parametrize("space", [" ", "\u00a0", "\u2003", "\u3000", "\u2028"])
def test_glob_arguments_refuse_any_whitespace(space: str) -> None:
    parameter = Parameter("pattern", "a glob", kind="glob")
    with pytest.raises(
        InvalidArgument, match=r"^topic_matches: pattern must not contain spaces\.$"
    ):
        parameter.validate("topic_matches", f"org.*{space}update")
    assert parameter.validate("topic_matches", f"{space}org.*.update{space}") == "org.*.update"


@pytest.mark.parametrize(
    ("parameter", "value", "message"),
    [
        (Parameter("n", "a number", kind="integer"), True, "r: n must be a whole number."),
        (Parameter("n", "a number", kind="integer"), "x", "r: n must be a whole number, not 'x'."),
        (Parameter("app", "an app"), 3, "r: app must be text, not int."),
        (Parameter("app", "an app"), "  ", "r: app must not be empty."),
        (
            Parameter("app", "an app"),
            "a" * 300,
            "r: app is too long (300 characters; at most 256).",
        ),
        (Parameter("app", "an app"), "a\x01", "r: app must not contain control characters."),
        (
            Parameter("level", "a level", kind="choice", choices=("INFO", "ERROR")),
            "loud",
            "r: level must be one of INFO, ERROR, not 'loud'.",
        ),
        (
            Parameter("user", "a user"),
            "@bob",
            "r: user '@bob' is not a valid name: it starts with a letter or a digit, then "
            "letters, digits and ._+@:/~- only, no spaces (leave out the @: bob, not @bob).",
        ),
    ],
)
def test_refused_arguments_say_which_rule_and_parameter(
    parameter: Parameter, value: Any, message: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parameter.validate("r", value)
    assert str(refused.value) == message
    assert refused.value.argument == parameter.name


def _checked(spec: RuleSpec, value: Any) -> dict[str, Any] | str:
    """What ``spec.validate`` answers by its checks alone (they take any mapping; the
    pattern, only a plain dict)."""
    return _validated(spec, MappingProxyType({"arg": value}))


def _validated(spec: RuleSpec, arguments: Any) -> dict[str, Any] | str:
    try:
        return spec.validate(arguments)
    except InvalidArgument as refused:
        return f"refused: {refused}"


_EDGES = (
    "bodhi",
    "a",
    "a" * 256,
    "a" * 257,
    " bodhi",
    "bodhi ",
    "bo dhi",
    "bodhi\n",
    "\u00a0bodhi",
    "bodhi\u3000",
    "bo\x00dhi",
    "bo\x1fdhi",
    "bo\ud800dhi",
    "@bodhi",
    "org.fedoraproject.*.bodhi.update.comment",
    "é\u2603\U0001f600",
    "\x7f",
    "",
    " ",
)


@pytest.mark.parametrize("kind", ["name", "text", "glob"])
def test_one_text_argument_validated_as_its_parameter_checks_it(kind: Any) -> None:
    # ``RuleSpec.validate`` answers the usual stored argument (one text value
    # already as it is kept) by one pattern: every value must get the answer the
    # parameter's own checks give, returned or refused alike.
    spec = RuleSpec("r", "r:r", lambda m, c: True, "r", "r", (Parameter("arg", "an arg", kind),))
    assert spec._unchanged is not None
    for value in (*_EDGES, *(e * 2 for e in _EDGES), *(f"x{e}y" for e in _EDGES)):
        assert _validated(spec, {"arg": value}) == _checked(spec, value), (kind, value)
    for value in ("a" * 255, "a" * 256, "a" * 257, " " + "a" * 256, "a" * 256 + " "):
        assert _validated(spec, {"arg": value}) == _checked(spec, value), (kind, len(value))


@given(
    kind=st.sampled_from(["name", "text", "glob"]),
    value=st.one_of(
        st.text(max_size=300),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=250, max_size=260),
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+@:/~ -]{0,20}\s?", fullmatch=True),
    ),
)
def test_one_text_argument_validated_alike_for_any_text(kind: Any, value: str) -> None:
    spec = RuleSpec("r", "r:r", lambda m, c: True, "r", "r", (Parameter("arg", "an arg", kind),))
    assert _validated(spec, {"arg": value}) == _checked(spec, value)


def test_validation_by_pattern_only_where_it_answers_alike(rules: Catalog) -> None:
    # Rules of one required text argument take the quick path; integer and choice
    # arguments, optional ones and several arguments always take the checks.
    for name in ("app_is", "topic_matches", "user_involved", "package_involved"):
        assert rules.get(name)._unchanged is not None, name
    assert rules.get("pertains_to_me")._unchanged is None
    optional = RuleSpec(
        "r", "r:r", lambda m, c: True, "r", "r", (Parameter("a", "a", required=False),)
    )
    choice = RuleSpec(
        "r", "r:r", lambda m, c: True, "r", "r", (Parameter("a", "a", "choice", ("X", "Y")),)
    )
    assert optional._unchanged is None and choice._unchanged is None
    assert choice.validate({"a": "x"}) == {"a": "X"}
    spec = rules.get("app_is")
    # Not a plain dict, a name that is not the parameter's, a value that is not str.
    assert spec.validate(_Mapping({"app": "bodhi"})) == {"app": "bodhi"}
    with pytest.raises(InvalidArgument, match="does not take"):
        spec.validate({"name": "bodhi"})
    with pytest.raises(InvalidArgument, match="must be text"):
        spec.validate({"app": 3})


class _Mapping(dict[str, Any]):
    pass


def test_patterns_whitespace_is_what_strip_removes() -> None:
    # The patterns take "no ``\s`` first or last" for "nothing for ``str.strip`` to
    # remove": true only while the two agree on every code point.
    space = re.compile(r"\s")
    assert [
        hex(point)
        for point in range(sys.maxunicode + 1)
        if bool(space.match(chr(point))) != chr(point).isspace()
    ] == []
