"""The built-in rule catalog (fmn_core.catalog) over real bus messages.

Three properties hold for every rule, checked over the whole shared corpus plus
the hand-built messages below: no rule raises, whatever the body holds; every
index hint is sound (a message that satisfies a rule carries one of the rule's
hint values under the hint's key, or the matcher would never look at it); and
each application rule says yes and no where a user expects it to.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from fmn_core import catalog
from fmn_core.errors import InvalidArgument
from fmn_core.messages import MessageFacts, facts_of, load_message
from fmn_core.ownership import OwnershipCache
from fmn_core.rules import Catalog, RuleContext, RuleSpec, default_catalog

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


@pytest.fixture(scope="module")
def rules() -> Catalog:
    built = Catalog()
    built.add_module(catalog)
    return built


def facts(topic: str, body: Any, headers: Mapping[str, Any] | None = None) -> MessageFacts:
    """A message as the consumer would see it: loaded, schema found, facts computed."""
    return facts_of(load_message({"topic": topic, "body": body, "headers": dict(headers or {})}))


def from_corpus(corpus: list[str], predicate: Any) -> dict[str, Any]:
    """The first corpus message (as a dict) that satisfies the predicate."""
    for line in corpus:
        data: dict[str, Any] = json.loads(line)
        if predicate(data):
            return data
    raise AssertionError("the corpus has no such message")


def changed(data: Mapping[str, Any], topic: str | None = None, **body: Any) -> MessageFacts:
    """A corpus message with a different topic or some top-level body keys replaced."""
    return facts(topic or data["topic"], {**data["body"], **body}, data.get("headers"))


def owner(name: str, owned: Mapping[str, list[str]] | None = None) -> RuleContext:
    """The context of a filter owned by ``name``; ``owned`` is package ownership."""
    triples = [("rpms", package, who) for who, packages in (owned or {}).items()
               for package in packages]
    return RuleContext(name, OwnershipCache(triples))


def check(rules: Catalog, name: str, message: MessageFacts, context: RuleContext | None = None,
          **arguments: Any) -> bool:
    """Run one rule the way the matcher does: validated arguments, then the function."""
    spec, normalized = rules.validate(name, arguments)
    return spec(message, context or owner("nobody"), normalized)


# --- the catalog as a whole ---------------------------------------------------------------


def test_catalog_keeps_the_contract_rules(rules: Catalog) -> None:
    for name in CONTRACT_RULES:
        assert rules.get(name).ref == f"fmn_core.catalog:{name}"


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
        ("copr_build_in_project", {"project": "@python/python3.14"},
         {"project": "@python/python3.14"}),
        ("meetbot_meeting_on_channel", {"channel": "#fedora-meeting"},
         {"channel": "#fedora-meeting"}),
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


# --- hand-built messages: real shapes the corpus lacks ---------------------------------------


def build_crafted(corpus: list[str]) -> dict[str, MessageFacts]:
    """Messages the behaviour tests use and the corpus-wide checks also run over."""
    git_push = {"agent": "jdoe", "branch": "rawhide", "end_commit": "abc", "total_commits": 1}
    # A real Bugzilla message (from the UMB bridge) with the times bugzilla2fedmsg sends.
    bug = json.loads(json.dumps(from_corpus(
        corpus, lambda d: d["topic"] == "/topic/VirtualTopic.eng.bugzilla.bug.create")["body"]))
    bug["event"]["time"] = bug["bug"]["creation_time"] = bug["bug"]["last_change_time"] = 1.5e9
    assigned = from_corpus(
        corpus, lambda d: d["topic"].endswith(".pagure.pull-request.assigned.added")
        and d["body"].get("agent"))
    pull_request = {**assigned["body"]["pullrequest"],
                    "assignee": {"full_url": "https://pagure.io/user/jdoe", "fullname": "J Doe",
                                 "name": "jdoe", "url_path": "user/jdoe"}}
    return {
        "koschei": facts(
            "org.fedoraproject.prod.koschei.package.state.change",
            {"collection": "f41", "collection_name": "Fedora Rawhide", "groups": ["python"],
             "koji_instance": "primary", "name": "python-foo", "new": "failing", "old": "ok",
             "repo": "f41"}),
        "meeting": facts(
            "org.fedoraproject.prod.meetbot.meeting.start",
            {"start_time": "2024-05-01T14:00:00", "start_user": "jdoe",
             "location": "#fedora-meeting-3", "meeting_name": "FESCo"}),
        "copr_failed": facts(
            "org.fedoraproject.prod.copr.build.end",
            {"build": 7, "chroot": "fedora-rawhide-x86_64", "copr": "python3.14",
             "ip": "10.0.0.1", "owner": "@python", "pid": 1, "pkg": "python-foo", "status": 0,
             "user": "churchyard", "version": "1.0-1", "what": "build end", "who": "backend"}),
        "container": facts("org.fedoraproject.prod.pagure.git.receive",
                           {**git_push, "repo": {"name": "fedora-toolbox",
                                                 "namespace": "container"}}),
        "module": facts("org.fedoraproject.prod.pagure.git.receive",
                        {**git_push, "repo": {"name": "nodejs", "namespace": "modules"}}),
        "flatpak": facts("org.fedoraproject.prod.pagure.git.receive",
                         {**git_push, "repo": {"name": "firefox", "namespace": "flatpaks"}}),
        "bugzilla": facts("org.fedoraproject.prod.bugzilla.bug.new", bug,
                          {"fedora_messaging_schema": "bugzilla2fedmsg.messageV1"}),
        "pr_assigned": changed(assigned, pullrequest=pull_request),
    }


@pytest.fixture(scope="module")
def crafted(corpus: list[str]) -> dict[str, MessageFacts]:
    return build_crafted(corpus)


# --- corpus-wide properties --------------------------------------------------------------

_POISON: tuple[Any, ...] = (None, 0, True, -1.5, "x", "", [], {}, [None], {"x": None}, ["x", 3])


def _harvest(value: Any, out: list[Any], depth: int = 0) -> None:
    """Collect the short strings and whole numbers in a body, breadth first-ish."""
    if len(out) >= 80 or depth > 6:
        return
    if isinstance(value, str):
        if 0 < len(value) <= 80:
            out.append(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        out.append(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _harvest(item, out, depth + 1)
    elif isinstance(value, list):
        for item in value[:20]:
            _harvest(item, out, depth + 1)


def _values_in(message: MessageFacts) -> list[str]:
    """Argument values a user could plausibly give for this message: every name it carries."""
    found: list[Any] = []
    _harvest(message.body, found)
    owner_ = message.body.get("owner") if isinstance(message.body, Mapping) else None
    copr = message.body.get("copr") if isinstance(message.body, Mapping) else None
    derived = [f"{owner_}/{copr}"] if isinstance(owner_, str) and isinstance(copr, str) else []
    values = [
        *sorted(message.usernames | message.packages | message.groups | message.containers
                | message.modules | message.flatpaks),
        *([message.agent_name] if message.agent_name else []),
        *derived,
        *(str(item) for item in found),
    ]
    return list(dict.fromkeys(values))


def _argument_sets(spec: RuleSpec, values: list[str]) -> Iterator[dict[str, Any]]:
    if not spec.parameters:
        yield {}
        return
    (parameter,) = spec.parameters  # every built-in rule takes at most one argument
    options = parameter.choices if parameter.kind == "choice" else values
    for value in options:
        try:
            yield spec.validate({parameter.name: value})
        except InvalidArgument:
            continue  # a filter can't hold it, so no message is ever checked with it


class _Owns:
    """An ownership lookup where everyone owns the same given packages (and so does
    every group in ``groups``, which is also every owner's memberships)."""

    def __init__(self, packages: frozenset[str], groups: frozenset[str] = frozenset()) -> None:
        self.packages = packages
        self.groups = groups

    def packages_of(self, owner: str) -> frozenset[str]:
        return self.packages

    def owners_of(self, package: str) -> frozenset[str]:
        return frozenset("@" + g for g in self.groups) if package in self.packages else frozenset()

    def groups_of(self, name: str) -> frozenset[str]:
        return self.groups


def _contexts(message: MessageFacts, values: list[str], with_owners: bool) -> list[RuleContext]:
    """Owners and ownership to try: ownership that does and doesn't cover the facts."""
    names = values if with_owners else [*sorted(message.usernames), "nobody"]
    # Every owner is in every group the message names or carries (membership rules).
    groups = frozenset(values) | message.groups
    lookups = (
        _Owns(frozenset(values) | message.packages, groups),
        # Owning body names but none of the message's packages: a rule that is
        # true here while hinted by owned packages would be unsound.
        _Owns(frozenset(values) - message.packages, groups),
    )
    return [RuleContext(name, lookup, lookup) for name in names[:40] for lookup in lookups]


def test_rules_survive_corpus_and_index_hints_are_sound(
    rules: Catalog, corpus_facts: list[MessageFacts], crafted: dict[str, MessageFacts]
) -> None:
    matched: dict[str, int] = dict.fromkeys((spec.name for spec in rules), 0)
    unsound: list[str] = []
    for message in [*corpus_facts, *crafted.values()]:
        values = _values_in(message)
        keys = message.index_keys
        for spec in rules:
            contexts = _contexts(message, values, with_owners=not spec.parameters)
            for arguments, context in itertools.product(_argument_sets(spec, values), contexts):
                try:
                    result = spec(message, context, arguments)
                except Exception as exc:  # report which rule and message, then fail
                    raise AssertionError(
                        f"{spec.name}({arguments}) raised on {message.id} ({message.topic})"
                    ) from exc
                if not result:
                    continue
                matched[spec.name] += 1
                # None: this filter can't be indexed, so the matcher checks it always.
                hint_values = spec.index_values(arguments, context)
                if hint_values is not None and hint_values.isdisjoint(keys[spec.hint.key]):
                    unsound.append(f"{spec.name}({arguments}) owner={context.owner} "
                                   f"on {message.id} ({message.topic})")
    assert not unsound, "unsound index hints:\n" + "\n".join(unsound[:20])
    # The check above is only as good as the messages that satisfy each rule.
    never = sorted(name for name, count in matched.items() if count == 0)
    assert never == [], f"rules no corpus or crafted message satisfies: {never}"


def _poisoned(body: Any, depth: int, value: Any) -> Any:
    """The body with every value at this depth replaced (depth 0: the body itself)."""
    if depth == 0:
        return value
    if isinstance(body, Mapping):
        return {key: _poisoned(item, depth - 1, value) for key, item in body.items()}
    if isinstance(body, list):
        return [_poisoned(item, depth - 1, value) for item in body]
    return body


def test_rules_survive_bodies_of_the_wrong_shape(
    rules: Catalog, corpus_facts: list[MessageFacts], crafted: dict[str, MessageFacts]
) -> None:
    one_per_topic = {message.topic: message for message in [*corpus_facts, *crafted.values()]}
    for message in one_per_topic.values():
        values = _values_in(message)[:6]
        argument_sets = {spec.name: list(_argument_sets(spec, values))[:4] for spec in rules}
        context = RuleContext(values[0] if values else "nobody", _Owns(frozenset(values)))
        for depth, poison in itertools.product(range(4), _POISON):
            bad = dataclasses.replace(message, body=_poisoned(message.body, depth, poison))
            for spec in rules:
                for arguments in argument_sets[spec.name]:
                    try:
                        spec(bad, context, arguments)
                    except Exception as exc:
                        raise AssertionError(
                            f"{spec.name}({arguments}) raised on {message.id} with depth-{depth} "
                            f"values replaced by {poison!r}"
                        ) from exc


# --- Koji ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def koji_build(corpus: list[str]) -> dict[str, Any]:
    return from_corpus(corpus, lambda d: d["topic"].endswith(".buildsys.build.state.change"))


@pytest.mark.parametrize(
    ("new", "completed", "failed", "state"),
    [(1, True, False, "COMPLETE"), (3, False, True, "FAILED"), (0, False, False, "BUILDING"),
     (4, False, False, "CANCELED")],
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
    assert not check(rules, "koji_build_failed",
                     changed(koji_build, "org.fedoraproject.prod.buildsys.tag", new=3))
    assert not check(rules, "koji_build_failed", changed(koji_build, new="3"))
    assert not check(rules, "koji_build_completed", changed(koji_build, new=True))
    assert check(rules, "koji_build_failed",
                 changed(koji_build, "org.fedoraproject.stg.buildsys.build.state.change", new=3))


def test_koji_scratch_build_needs_a_finished_scratch_build_task(
    rules: Catalog, corpus: list[str]
) -> None:
    data = from_corpus(
        corpus, lambda d: d["topic"].endswith(".buildsys.task.state.change")
        and "scratch" in json.dumps(d["body"].get("info", {}).get("request")))
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


# --- Bodhi -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bodhi_comment(corpus: list[str]) -> dict[str, Any]:
    return from_corpus(
        corpus, lambda d: d["topic"].endswith(".bodhi.update.comment")
        and d["body"].get("comment", {}).get("user", {}).get("name") == "dudemcpants")


def test_bodhi_update_for_package_uses_the_update_builds(
    rules: Catalog, bodhi_comment: dict[str, Any]
) -> None:
    message = changed(bodhi_comment)
    assert message.packages == {"kernel", "abrt-addon-python3"}
    assert check(rules, "bodhi_update_for_package", message, package="kernel")
    assert not check(rules, "bodhi_update_for_package", message, package="bash")


def test_bodhi_update_status_reads_the_update(rules: Catalog, corpus: list[str],
                                              bodhi_comment: dict[str, Any]) -> None:
    assert check(rules, "bodhi_update_status", changed(bodhi_comment), status="pending")
    assert not check(rules, "bodhi_update_status", changed(bodhi_comment), status="stable")
    stable = from_corpus(corpus, lambda d: d["topic"].endswith(".bodhi.update.complete.stable"))
    assert check(rules, "bodhi_update_status", changed(stable), status="stable")


def test_bodhi_update_pushed_tells_testing_from_stable(rules: Catalog, corpus: list[str]) -> None:
    stable = changed(from_corpus(
        corpus, lambda d: d["topic"].endswith(".bodhi.update.complete.stable")))
    testing = changed(from_corpus(
        corpus, lambda d: d["topic"].endswith(".bodhi.update.complete.testing")))
    assert check(rules, "bodhi_update_pushed", stable, repository="stable")
    assert not check(rules, "bodhi_update_pushed", stable, repository="testing")
    assert check(rules, "bodhi_update_pushed", testing, repository="testing")
    spec, arguments = rules.validate("bodhi_update_pushed", {"repository": "stable"})
    assert spec.index_values(arguments, owner("x")) == frozenset({
        "org.fedoraproject.prod.bodhi.update.complete.stable",
        "org.fedoraproject.stg.bodhi.update.complete.stable",
    })


def test_bodhi_comment_on_my_update_is_for_the_submitter(
    rules: Catalog, bodhi_comment: dict[str, Any]
) -> None:
    message = changed(bodhi_comment)  # dudemcpants commented on ryanlerch's update
    assert check(rules, "bodhi_comment_on_my_update", message, owner("ryanlerch"))
    assert not check(rules, "bodhi_comment_on_my_update", message, owner("dudemcpants"))
    assert not check(rules, "bodhi_comment_on_my_update", message, owner("kalev"))
    own = json.loads(json.dumps(bodhi_comment["body"]))
    own["comment"]["user"]["name"] = "ryanlerch"
    assert not check(rules, "bodhi_comment_on_my_update", changed(bodhi_comment, **own),
                     owner("ryanlerch"))


def test_bodhi_negative_karma_needs_karma_below_zero(
    rules: Catalog, bodhi_comment: dict[str, Any]
) -> None:
    assert check(rules, "bodhi_negative_karma", changed(bodhi_comment))  # karma -1
    neutral = json.loads(json.dumps(bodhi_comment["body"]))
    neutral["comment"]["karma"] = 0
    assert not check(rules, "bodhi_negative_karma", changed(bodhi_comment, **neutral))


# --- Pagure ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def distgit_pr(corpus: list[str]) -> dict[str, Any]:
    return from_corpus(
        corpus, lambda d: d["topic"] == "org.fedoraproject.prod.pagure.pull-request.new"
        and d["body"]["pullrequest"]["project"]["fullname"] == "rpms/optee_os")


def test_pagure_pr_on_project_matches_the_full_name(
    rules: Catalog, corpus: list[str], distgit_pr: dict[str, Any]
) -> None:
    assert check(rules, "pagure_pr_on_project", changed(distgit_pr), project="rpms/optee_os")
    assert not check(rules, "pagure_pr_on_project", changed(distgit_pr), project="optee_os")
    assert not check(rules, "pagure_pr_on_project", changed(distgit_pr), project="rpms/kernel")
    kiwi = from_corpus(corpus, lambda d: "fedora-kiwi-descriptions" in json.dumps(
        d["body"].get("pullrequest", {}).get("project", {}).get("fullname")))
    assert check(rules, "pagure_pr_on_project", changed(kiwi), project="fedora-kiwi-descriptions")


def test_pagure_issue_on_project_reads_old_messages_too(rules: Catalog, corpus: list[str]) -> None:
    # A 2016 pagure.io message: the project has a name but no fullname yet.
    data = from_corpus(corpus, lambda d: d["topic"] == "io.pagure.prod.pagure.issue.new")
    assert check(rules, "pagure_issue_on_project", changed(data), project="pagure")
    assert not check(rules, "pagure_issue_on_project", changed(data), project="rpms/pagure")
    assert not check(rules, "pagure_pr_on_project", changed(data), project="pagure")


def test_pagure_comment_on_my_pr_is_for_the_author(rules: Catalog, corpus: list[str]) -> None:
    data = from_corpus(corpus, lambda d: d["id"] == "6a1973ae-a0ab-4e5a-8e90-34eea619a5d9")
    message = changed(data)  # mmassari commented on packit's pull request
    assert check(rules, "pagure_comment_on_my_pr", message, owner("packit"))
    assert not check(rules, "pagure_comment_on_my_pr", message, owner("mmassari"))


def test_pagure_assigned_to_me_reads_the_assignee(
    rules: Catalog, crafted: dict[str, MessageFacts]
) -> None:
    assert check(rules, "pagure_assigned_to_me", crafted["pr_assigned"], owner("jdoe"))
    assert not check(rules, "pagure_assigned_to_me", crafted["pr_assigned"], owner("jjames"))


def test_distgit_pr_on_my_packages_uses_ownership(
    rules: Catalog, corpus: list[str], distgit_pr: dict[str, Any]
) -> None:
    message = changed(distgit_pr)
    assert check(rules, "distgit_pr_on_my_packages", message,
                 owner("eballetbo", {"eballetbo": ["optee_os"]}))
    assert not check(rules, "distgit_pr_on_my_packages", message,
                     owner("eballetbo", {"eballetbo": ["kernel"], "pbrobinson": ["optee_os"]}))
    # The same project name on pagure.io is not a Fedora package.
    pagure_io = changed(distgit_pr, "io.pagure.prod.pagure.pull-request.new")
    assert not check(rules, "distgit_pr_on_my_packages", pagure_io,
                     owner("eballetbo", {"eballetbo": ["optee_os"]}))


# --- Copr ------------------------------------------------------------------------------------


def test_copr_build_in_project_matches_owner_and_name(rules: Catalog, corpus: list[str]) -> None:
    group_build = changed(from_corpus(
        corpus, lambda d: d["id"] == "2016-31e1e282-c176-4a9e-94bc-e4ae34536d47"))
    assert check(rules, "copr_build_in_project", group_build, project="@python/python26")
    assert check(rules, "copr_build_in_project", group_build, project="@python/*")
    assert not check(rules, "copr_build_in_project", group_build, project="python/python26")
    assert not check(rules, "copr_build_in_project", group_build, project="@python/python3")


def test_copr_build_in_my_project_is_for_the_owner(rules: Catalog, corpus: list[str]) -> None:
    data = from_corpus(corpus, lambda d: d["id"] == "c5d0b305-b3ca-585d-a4c1-2342244ec62f")
    assert check(rules, "copr_build_in_my_project", changed(data), owner("packit"))
    assert not check(rules, "copr_build_in_my_project", changed(data), owner("praiskup"))


def test_copr_build_failed_needs_the_failed_status(
    rules: Catalog, corpus: list[str], crafted: dict[str, MessageFacts]
) -> None:
    succeeded = from_corpus(corpus, lambda d: d["id"] == "3e2dfbb5-3dbf-504d-a032-baeb200272c6")
    assert not check(rules, "copr_build_failed", changed(succeeded))
    assert check(rules, "copr_build_failed", changed(succeeded, status=0))
    assert check(rules, "copr_build_failed", crafted["copr_failed"])
    start = from_corpus(corpus, lambda d: d["id"] == "c5d0b305-b3ca-585d-a4c1-2342244ec62f")
    assert not check(rules, "copr_build_failed", changed(start, status=0))


# --- Anitya ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flatpak_release(corpus: list[str]) -> dict[str, Any]:
    return from_corpus(
        corpus, lambda d: d["topic"].endswith("anitya.project.version.update.v2")
        and d["body"]["project"]["name"] == "flatpak")


def test_anitya_new_release_matches_project_or_package(
    rules: Catalog, flatpak_release: dict[str, Any]
) -> None:
    message = changed(flatpak_release)
    assert check(rules, "anitya_new_release", message, project="flatpak")
    assert check(rules, "anitya_new_release", message, project="Flatpak")
    assert not check(rules, "anitya_new_release", message, project="flatpak-builder")
    renamed = changed(flatpak_release, project={**flatpak_release["body"]["project"],
                                                "name": "flatpak-upstream"})
    assert check(rules, "anitya_new_release", renamed, project="flatpak")  # the Fedora package


def test_anitya_new_release_for_my_packages_uses_ownership(
    rules: Catalog, flatpak_release: dict[str, Any]
) -> None:
    message = changed(flatpak_release)
    assert check(rules, "anitya_new_release_for_my_packages", message,
                 owner("kalev", {"kalev": ["flatpak", "gnome-shell"]}))
    assert not check(rules, "anitya_new_release_for_my_packages", message,
                     owner("kalev", {"kalev": ["gnome-shell"]}))


# --- Containers, modules, flatpaks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [("container_involved", "container", "fedora-toolbox"),
     ("module_involved", "module", "nodejs"),
     ("flatpak_involved", "flatpak", "firefox")],
)
def test_artifact_rules_read_the_facts(
    rules: Catalog, crafted: dict[str, MessageFacts], name: str, key: str, value: str
) -> None:
    assert check(rules, name, crafted[key], None, **{key: value})
    assert not check(rules, name, crafted[key], None, **{key: "other"})
    other_kind = "module" if key != "module" else "container"
    assert not check(rules, name, crafted[other_kind], None, **{key: value})


# --- Meetings --------------------------------------------------------------------------------


def test_meetbot_meeting_on_channel_normalizes_the_channel(
    rules: Catalog, corpus: list[str], crafted: dict[str, MessageFacts]
) -> None:
    legacy = changed(from_corpus(
        corpus, lambda d: d["topic"] == "org.fedoraproject.prod.meetbot.meeting.start"))
    for channel in ("#fedora-meeting-2", "fedora-meeting-2", "#Fedora-Meeting-*"):
        assert check(rules, "meetbot_meeting_on_channel", legacy, channel=channel)
    assert not check(rules, "meetbot_meeting_on_channel", legacy, channel="fedora-meeting")
    assert check(rules, "meetbot_meeting_on_channel", crafted["meeting"],
                 channel="fedora-meeting-3")


def test_fedocal_meeting_matches_the_calendar(rules: Catalog, corpus: list[str]) -> None:
    data = from_corpus(corpus, lambda d: d["topic"] == "org.fedoraproject.prod.fedocal.meeting.new")
    message = changed(data)
    assert check(rules, "fedocal_meeting", message, calendar="test_calendar")
    assert check(rules, "fedocal_meeting", message, calendar="Test_Calendar")
    assert not check(rules, "fedocal_meeting", message, calendar="infrastructure")
    calendar_only = changed(data, "org.fedoraproject.prod.fedocal.calendar.update")
    assert not check(rules, "fedocal_meeting", calendar_only, calendar="test_calendar")


# --- Accounts, groups, badges -----------------------------------------------------------------


def test_badge_awarded_to_me_reads_both_body_shapes(rules: Catalog, corpus: list[str]) -> None:
    awards = [changed(json.loads(line)) for line in corpus
              if json.loads(line)["topic"].endswith(".fedbadges.badge.award")]
    assert len(awards) >= 2
    for award in awards:
        assert check(rules, "badge_awarded_to_me", award, owner("ralph"))
        assert not check(rules, "badge_awarded_to_me", award, owner("threebean"))


def test_group_membership_rules(rules: Catalog, corpus: list[str]) -> None:
    data = from_corpus(corpus, lambda d: d["topic"].endswith(".fas.group.member.sponsor")
                       and "msg" in d["body"])
    message = changed(data)  # dudemcpants sponsored testuser into developers
    assert check(rules, "fas_group_membership_change", message, group="developers")
    assert not check(rules, "fas_group_membership_change", message, group="packager")
    assert check(rules, "my_group_membership_changed", message, owner("testuser"))
    assert not check(rules, "my_group_membership_changed", message, owner("dudemcpants"))


# --- Discourse, Bugzilla, Koschei -------------------------------------------------------------


def test_discourse_category_by_slug_or_number(rules: Catalog, corpus: list[str]) -> None:
    post = changed(from_corpus(corpus, lambda d: d["topic"].endswith("discourse.post.post_edited")))
    topic = changed(from_corpus(
        corpus, lambda d: d["topic"].endswith("discourse.topic.topic_created")))
    assert check(rules, "discourse_category", post, category="english")
    assert not check(rules, "discourse_category", post, category="project")
    assert check(rules, "discourse_category", topic, category="97")
    assert not check(rules, "discourse_category", topic, category="98")
    assert not check(rules, "discourse_category", topic, category="english")


def test_bugzilla_bug_on_package_uses_the_component(
    rules: Catalog, crafted: dict[str, MessageFacts]
) -> None:
    bug = crafted["bugzilla"]
    assert bug.schema == "bugzilla2fedmsg.messageV1"
    assert check(rules, "bugzilla_bug_on_package", bug, package="selinux-policy")
    assert not check(rules, "bugzilla_bug_on_package", bug, package="kernel")


def test_koschei_package_failing_needs_the_failing_state(
    rules: Catalog, crafted: dict[str, MessageFacts]
) -> None:
    failing = crafted["koschei"]
    assert check(rules, "koschei_package_failing", failing)
    recovered = dataclasses.replace(failing, body={**failing.body, "new": "ok"})
    assert not check(rules, "koschei_package_failing", recovered)


# --- generic ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "expected"),
    [("kalev", True), (None, True), ("packit", False), ("zodbot", False),
     ("dependabot[bot]", False), ("release-bot", False), ("abbot", True)],
)
def test_not_from_bot(rules: Catalog, bodhi_comment: dict[str, Any], agent: str | None,
                      expected: bool) -> None:
    message = dataclasses.replace(changed(bodhi_comment), agent_name=agent)
    assert check(rules, "not_from_bot", message) is expected


def test_topic_contains(rules: Catalog, bodhi_comment: dict[str, Any]) -> None:
    assert check(rules, "topic_contains", changed(bodhi_comment), text=".update.comment")
    assert not check(rules, "topic_contains", changed(bodhi_comment), text="koji")


def test_package_owned_by_me_reads_the_ownership_cache(
    rules: Catalog, bodhi_comment: dict[str, Any]
) -> None:
    message = changed(bodhi_comment)
    mine = owner("jforbes", {"jforbes": ["kernel"], "@kernel-maint": ["kernel"]})
    assert check(rules, "package_owned_by_me", message, mine)
    assert check(rules, "package_owned_by_group", message, mine, group="kernel-maint")
    assert not check(rules, "package_owned_by_me", message, owner("jforbes"))


def test_app_is_matches_app_names_with_spaces(corpus: list[str]) -> None:
    from fmn_core.errors import MalformedMessage
    from fmn_core.messages import facts_of, parse_line
    from fmn_core.rules import RuleContext, default_catalog

    spec, args = default_catalog().validate("app_is", {"app": "the new hotness"})
    hits = []
    for line in corpus:
        try:
            facts = facts_of(parse_line(line))
        except MalformedMessage:
            continue
        if facts.app_name == "The New Hotness":
            hits.append(spec(facts, RuleContext(owner="alice"), args))
    assert hits and all(hits)
