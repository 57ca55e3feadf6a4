"""Messages for the rule tests: corpus picks, edited copies and hand-built shapes.

Every rule is run the way the matcher runs it (:func:`check`: validated
arguments, then the function) on messages loaded the way the consumer loads
them (:func:`facts`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fmn_core.messages import MessageFacts, facts_of, load_message
from fmn_core.ownership import OwnershipCache
from fmn_core.rules import Catalog, RuleContext


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
    triples = [
        ("rpms", package, who) for who, packages in (owned or {}).items() for package in packages
    ]
    return RuleContext(name, OwnershipCache(triples))


def check(
    rules: Catalog,
    name: str,
    message: MessageFacts,
    context: RuleContext | None = None,
    **arguments: Any,
) -> bool:
    """Run one rule the way the matcher does: validated arguments, then the function."""
    spec, normalized = rules.validate(name, arguments)
    return spec(message, context or owner("nobody"), normalized)


def build_crafted(corpus: list[str]) -> dict[str, MessageFacts]:
    """Messages the behaviour tests use and the corpus-wide checks also run over."""
    git_push = {"agent": "jdoe", "branch": "rawhide", "end_commit": "abc", "total_commits": 1}
    # A real Bugzilla message (from the UMB bridge) with the times bugzilla2fedmsg sends.
    bug = json.loads(
        json.dumps(
            from_corpus(
                corpus, lambda d: d["topic"] == "/topic/VirtualTopic.eng.bugzilla.bug.create"
            )["body"]
        )
    )
    bug["event"]["time"] = bug["bug"]["creation_time"] = bug["bug"]["last_change_time"] = 1.5e9
    assigned = from_corpus(
        corpus,
        lambda d: (
            d["topic"].endswith(".pagure.pull-request.assigned.added") and d["body"].get("agent")
        ),
    )
    pull_request = {
        **assigned["body"]["pullrequest"],
        "assignee": {
            "full_url": "https://pagure.io/user/jdoe",
            "fullname": "J Doe",
            "name": "jdoe",
            "url_path": "user/jdoe",
        },
    }
    return {
        "koschei": facts(
            "org.fedoraproject.prod.koschei.package.state.change",
            {
                "collection": "f41",
                "collection_name": "Fedora Rawhide",
                "groups": ["python"],
                "koji_instance": "primary",
                "name": "python-foo",
                "new": "failing",
                "old": "ok",
                "repo": "f41",
            },
        ),
        "meeting": facts(
            "org.fedoraproject.prod.meetbot.meeting.start",
            {
                "start_time": "2024-05-01T14:00:00",
                "start_user": "jdoe",
                "location": "#fedora-meeting-3",
                "meeting_name": "FESCo",
            },
        ),
        "copr_failed": facts(
            "org.fedoraproject.prod.copr.build.end",
            {
                "build": 7,
                "chroot": "fedora-rawhide-x86_64",
                "copr": "python3.14",
                "ip": "10.0.0.1",
                "owner": "@python",
                "pid": 1,
                "pkg": "python-foo",
                "status": 0,
                "user": "churchyard",
                "version": "1.0-1",
                "what": "build end",
                "who": "backend",
            },
        ),
        "container": facts(
            "org.fedoraproject.prod.pagure.git.receive",
            {**git_push, "repo": {"name": "fedora-toolbox", "namespace": "container"}},
        ),
        "module": facts(
            "org.fedoraproject.prod.pagure.git.receive",
            {**git_push, "repo": {"name": "nodejs", "namespace": "modules"}},
        ),
        "flatpak": facts(
            "org.fedoraproject.prod.pagure.git.receive",
            {**git_push, "repo": {"name": "firefox", "namespace": "flatpaks"}},
        ),
        "bugzilla": facts(
            "org.fedoraproject.prod.bugzilla.bug.new",
            bug,
            {"fedora_messaging_schema": "bugzilla2fedmsg.messageV1"},
        ),
        "pr_assigned": changed(assigned, pullrequest=pull_request),
    }
