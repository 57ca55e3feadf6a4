"""Reading bus messages: decoding, schema lookup and facts (fmn_core.messages)."""

from __future__ import annotations

import json
from typing import Any

import pika
import pytest
from conftest import readable_messages  # tests/conftest.py (tests/ is on sys.path)
from fedora_messaging import message as fm_message

from fmn_core import messages
from fmn_core.errors import MalformedMessage
from fmn_core.messages import (
    MessageFacts,
    check_json_text,
    facts_of,
    load_message,
    loads_bounded,
    loads_json,
    loads_strict,
    parse_line,
)

KOJI_BUILD_SCHEMA = "koji_fedoramessaging.build.BuildStateChangeV1"


def _corpus_dicts(corpus: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in corpus]


def _first(corpus: list[str], predicate: Any) -> dict[str, Any]:
    for data in _corpus_dicts(corpus):
        if predicate(data):
            return data
    raise AssertionError("the corpus has no such message")


def test_parse_line_reads_every_corpus_line(corpus: list[str]) -> None:
    parsed = 0
    for line in corpus:
        try:
            message = parse_line(line)
        except MalformedMessage as exc:
            assert str(exc), "a MalformedMessage must say what is wrong"
            continue
        assert isinstance(message, fm_message.Message)
        assert message.topic == json.loads(line)["topic"]
        parsed += 1
    # The corpus README promises every line loads; none may be lost to fmn.
    assert parsed == len(corpus) > 900


def test_parse_line_keeps_the_message_id(corpus: list[str]) -> None:
    for line in corpus[:50]:
        assert parse_line(line).id == json.loads(line)["id"]


def test_facts_of_never_raises_on_corpus(corpus: list[str]) -> None:
    for line in corpus:
        facts = facts_of(parse_line(line))
        assert isinstance(facts, MessageFacts)
        assert facts.topic and facts.id
        assert isinstance(facts.summary, str)
        assert all(isinstance(name, str) for name in facts.usernames | facts.packages)
        keys = facts.index_keys
        assert set(keys["topic"]) == {facts.topic}
        assert set(keys["app"]) <= {facts.app_name.lower()}


def test_facts_of_survives_schema_properties_that_raise(corpus: list[str]) -> None:
    # A pagure issue-assigned message without an assignee validates but raises
    # TypeError from .summary (see the corpus README).
    data = _first(corpus, lambda d: d["id"] == "00847d11-6111-56db-8947-c505bb6822a2")
    message = load_message(data)
    with pytest.raises(TypeError):
        _ = message.summary
    facts = facts_of(message)
    assert facts.summary == ""
    assert facts.schema == "pagure.issue.assigned.added"
    assert facts.agent_name == "dummy-user"


def test_load_message_finds_koji_build_class_from_topic(corpus: list[str]) -> None:
    data = _first(
        corpus,
        lambda d: (
            d["topic"].endswith(".buildsys.build.state.change")
            and "task" in d["body"]
            and not d["headers"]
        ),
    )
    message = load_message(data)
    assert type(message).__name__ == "BuildStateChangeV1"
    assert type(message).__module__ == "koji_fedoramessaging_messages.build"
    facts = facts_of(message)
    assert facts.schema == KOJI_BUILD_SCHEMA
    assert facts.packages == frozenset((data["body"]["name"],))
    assert facts.usernames == frozenset((data["body"]["owner"],))


def test_load_message_uses_the_schema_header(corpus: list[str]) -> None:
    data = _first(
        corpus, lambda d: d["headers"].get("fedora_messaging_schema") == KOJI_BUILD_SCHEMA
    )
    facts = facts_of(load_message(data))
    assert facts.schema == KOJI_BUILD_SCHEMA
    assert facts.packages


def test_load_message_falls_back_to_base_class_when_no_schema_validates(
    corpus: list[str],
) -> None:
    # packit's trimmed koji messages lack "task", which the koji schema requires.
    data = _first(
        corpus,
        lambda d: d["topic"].endswith(".buildsys.build.state.change") and "task" not in d["body"],
    )
    message = load_message(data)
    assert type(message) is fm_message.Message
    assert facts_of(message).schema == "base.message"


def test_load_message_gives_unknown_topics_the_base_class() -> None:
    message = load_message({"topic": "org.example.prod.nothing.known", "body": {"a": 1}})
    assert type(message) is fm_message.Message
    assert facts_of(message).app_name == "nothing"


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"topic": "a.b", "body": [1, 2]}), "body is not a JSON object"),
        (json.dumps({"topic": "a.b", "body": "text"}), "body is not a JSON object"),
        (json.dumps({"body": {}}), "has no topic"),
        (json.dumps({"topic": "", "body": {}}), "has no topic"),
        (json.dumps({"topic": 42, "body": {}}), "has no topic"),
        (json.dumps({"topic": "a.b", "body": {}, "headers": [1]}), "headers are not"),
    ],
)
def test_parse_line_rejects_malformed_lines(line: str | bytes, words: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse_line(line)
    assert words in str(caught.value)


def test_load_message_rejects_body_that_does_not_match_its_header_schema() -> None:
    data = {
        "id": "abc-123",
        "topic": "org.fedoraproject.prod.buildsys.build.state.change",
        "headers": {"fedora_messaging_schema": KOJI_BUILD_SCHEMA},
        "body": {"name": "kernel"},
    }
    with pytest.raises(MalformedMessage) as caught:
        load_message(data)
    assert KOJI_BUILD_SCHEMA in str(caught.value)
    assert "does not match its schema" in str(caught.value)
    assert caught.value.message_id == "abc-123"


@pytest.mark.parametrize(
    ("topic", "app"),
    [
        ("org.fedoraproject.prod.bodhi.update.comment", "bodhi"),
        ("org.centos.prod.cbs.build.done", "cbs"),
        ("io.pagure.prod.pagure.issue.new", "pagure"),
        ("org.release-monitoring.prod.anitya.project.map.new", "anitya"),
        ("/topic/VirtualTopic.eng.bugzilla.bug.create", "bugzilla"),
        ("VirtualTopic.eng.brew.build.tag", "brew"),
        ("koschei.whatever", "koschei"),
    ],
)
def test_facts_of_takes_app_name_from_topic_without_schema(topic: str, app: str) -> None:
    facts = facts_of(load_message({"topic": topic, "body": {}}))
    assert facts.app_name == app
    assert set(facts.index_keys["app"]) == {app}


def test_facts_of_adds_the_distgit_package_of_a_pull_request(corpus: list[str]) -> None:
    data = _first(
        corpus,
        lambda d: (
            d["topic"] == "org.fedoraproject.prod.pagure.pull-request.new"
            and (d["body"].get("pullrequest") or {}).get("project", {}).get("namespace") == "rpms"
        ),
    )
    name = data["body"]["pullrequest"]["project"]["name"]
    facts = facts_of(load_message(data))
    assert facts.schema == "pagure.pull-request.new"
    assert name in facts.packages
    assert name in facts.index_keys["package"]


def test_facts_of_ignores_pagure_io_projects(corpus: list[str]) -> None:
    data = _first(corpus, lambda d: d["topic"].startswith("io.pagure.prod.pagure.pull-request"))
    data = {**data, "body": {**data["body"], "project": {"namespace": "rpms", "name": "bash"}}}
    assert facts_of(load_message(data)).packages == frozenset()


@pytest.mark.parametrize(
    ("namespace", "fact"),
    [
        ("rpms", "packages"),
        ("container", "containers"),
        ("modules", "modules"),
        ("flatpaks", "flatpaks"),
        ("tests", None),
        ("fedora-infra", None),
    ],
)
def test_facts_of_files_distgit_repositories_by_namespace(namespace: str, fact: str | None) -> None:
    body = {
        "agent": "pagure",
        "branch": "rawhide",
        "end_commit": "abc",
        "total_commits": 1,
        "repo": {"name": "thing", "namespace": namespace},
    }
    facts = facts_of(
        load_message({"topic": "org.fedoraproject.prod.pagure.git.receive", "body": body})
    )
    for name in ("packages", "containers", "modules", "flatpaks"):
        expected = frozenset(("thing",)) if name == fact else frozenset()
        assert getattr(facts, name) == expected, name


@pytest.mark.parametrize(
    "body",
    [
        {"repo": "rpms/kernel"},
        {"repo": {"name": 3, "namespace": "rpms"}},
        {"repo": {"name": "", "namespace": "rpms"}},
        {"project": ["rpms", "kernel"]},
        {"pullrequest": "kernel", "project": {"namespace": ["rpms"], "name": "kernel"}},
    ],
)
def test_facts_of_copes_with_odd_distgit_bodies(body: dict[str, Any]) -> None:
    facts = facts_of(
        load_message({"topic": "org.fedoraproject.prod.pagure.git.receive", "body": body})
    )
    assert facts.packages == frozenset()


def test_a_summary_built_from_missing_fields_is_dropped() -> None:
    # Koji's tag schema formats "None-None-None was tagged into None by None" for a
    # message without those fields: the topic says more than that.
    message = load_message(
        {
            "id": "tag-without-fields",
            "topic": "org.fedoraproject.prod.buildsys.tag",
            "body": {"instance": "primary"},
            "headers": {"fedora_messaging_schema": "koji_fedoramessaging.tag.TagV1"},
        }
    )
    assert "None" in message.summary
    assert facts_of(message).summary == ""


def test_loads_strict_reads_every_corpus_line_as_the_json_module_does(corpus: list[str]) -> None:
    for line in corpus:
        assert loads_strict(line) == json.loads(line)


@pytest.mark.parametrize(
    "text",
    [
        # Integers beyond 64 bits: orjson would read them as floats.
        '{"n": 123456789012345678901234567890}',
        '{"n": -9223372036854775809}',
        '{"n": 18446744073709551616, "m": [1e3, 0.1, -0.0]}',
        # A lone surrogate: orjson refuses it, the json module (and so fmn) accepts it.
        '{"s": "\\ud800 \\udfff"}',
        '{"s": "w\\u00f6rld \\ud83d\\ude00", "k": {"a": 1, "a": 2}}',
        '{"id": "12345678901234567890123"}',
    ],
)
def test_loads_strict_reads_what_the_json_module_reads(text: str) -> None:
    value = loads_strict(text)
    assert repr(value) == repr(json.loads(text))


def test_loads_strict_keeps_long_integers_exact() -> None:
    value = loads_strict('{"n": 123456789012345678901234567890}')
    assert value["n"] == 123456789012345678901234567890
    assert isinstance(value["n"], int)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"n": NaN}', "NaN is not a JSON value"),
        ('{"n": -Infinity}', "-Infinity is not a JSON value"),
        ('{"n": 1e999}', "1e999 is too large a number"),
        ('{"n": 1}x', "Extra data"),
        ('{"n": 01}', "Expecting ','"),
        ("", "Expecting value"),
    ],
)
def test_loads_strict_refuses_with_the_json_module_s_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        loads_strict(text)


def test_facts_skip_only_base_properties_that_return_a_constant(
    corpus: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fmn_core.messages as messages

    loaded = readable_messages(corpus)
    skipped = [facts_of(m) for m in loaded]
    assert messages._INHERITED  # the corpus has classes that inherit some
    assert any(messages._INHERITED.values())
    # Every property read, as before: the same facts.
    monkeypatch.setattr(messages, "_BASE_CONSTANT", frozenset())
    monkeypatch.setattr(messages, "_INHERITED", {})
    assert [facts_of(m) for m in loaded] == skipped


def test_facts_read_a_property_a_schema_overrides() -> None:
    from fmn_core import messages

    class Packaged(fm_message.Message):
        @property
        def packages(self) -> list[str]:
            return ["kernel"]

        @property
        def usernames(self) -> list[str]:
            raise RuntimeError("a schema property that breaks")

    properties = pika.BasicProperties(headers={}, message_id="m-1")
    message = Packaged(topic="org.fedoraproject.prod.test", body={}, properties=properties)
    facts = facts_of(message)
    assert facts.packages == frozenset({"kernel"})
    assert facts.usernames == frozenset()
    assert messages._inherited_constants(Packaged) == messages._BASE_CONSTANT - {
        "packages",
        "usernames",
    }

    class Looked(fm_message.Message):
        def __getattribute__(self, name: str) -> Any:
            if name == "groups":
                return ["admins"]
            return super().__getattribute__(name)

    assert messages._inherited_constants(Looked) == frozenset()
    looked = Looked(topic="t.x", body={}, properties=properties)
    assert facts_of(looked).groups == frozenset({"admins"})


def test_a_getter_is_constant_only_when_it_returns_none_or_an_empty_list() -> None:
    from fmn_core.messages import _returns_constant

    def none(self: object) -> None:
        """Documented."""
        return None

    def empty(self: object) -> list[str]:
        return []

    def filled(self: object) -> list[str]:
        return ["a"]

    def computed(self: object) -> object:
        return getattr(self, "topic", None)

    assert _returns_constant(property(none)) and _returns_constant(property(empty))
    assert not _returns_constant(property(filled))
    assert not _returns_constant(property(computed))
    assert not _returns_constant(property(len))
    assert not _returns_constant(None)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, 2.5, -0.0, true, null, "x\\u00e9"]}',
        "12345678901234567890123",  # beyond 64 bits: the standard library's int
        '{"n": 123456789012345678901234567890}',
        "1e400",  # orjson refuses; the standard library reads inf
        '"\\ud800"',  # a lone surrogate: orjson refuses it
        '{"a": 1, "a": 2}',
        "[" * 300 + "]" * 300,
    ],
)
def test_loads_json_reads_what_json_loads_reads(text: str) -> None:
    assert loads_json(text) == json.loads(text)
    assert loads_json(text.encode("utf-8", "surrogatepass")) == json.loads(text)


# -- the decoding and the facts, held to what they replaced --------------------------------


def _reference_facts(message: Any, body_json: str | None = None) -> MessageFacts:
    """``facts_of`` as it was: a dict of artifacts, the summary's word search always run."""
    inherited = messages._inherited_constants(type(message))
    app = (
        None if "app_name" in inherited else messages._safe(message, "app_name", None)
    ) or messages._app_from_topic(message.topic)
    agent = None if "agent_name" in inherited else messages._safe(message, "agent_name", None)
    summary = messages._safe(message, "summary", "")
    text = str(summary) if summary else ""
    if (
        text
        and messages._NONE_WORD.search(text)
        and "None" not in json.dumps(message.body, default=str)
    ):
        text = ""
    url = messages._safe(message, "url", None)
    severity = getattr(message, "severity", fm_message.INFO)
    artifacts = {
        fact: frozenset()
        if fact in inherited
        else messages._strings(messages._safe(message, fact, ()))
        for fact in ("packages", "containers", "modules", "flatpaks")
    }
    distgit = messages._distgit_artifact(message.topic, message.body)
    if distgit is not None:
        artifacts[distgit[0]] = artifacts[distgit[0]] | {distgit[1]}
    return MessageFacts(
        id=str(message.id),
        topic=message.topic,
        app_name=str(app),
        agent_name=agent if isinstance(agent, str) and agent else None,
        usernames=frozenset()
        if "usernames" in inherited
        else messages._strings(messages._safe(message, "usernames", ())),
        packages=artifacts["packages"],
        groups=frozenset()
        if "groups" in inherited
        else messages._strings(messages._safe(message, "groups", ())),
        containers=artifacts["containers"],
        modules=artifacts["modules"],
        flatpaks=artifacts["flatpaks"],
        severity=severity if isinstance(severity, int) else fm_message.INFO,
        summary=text,
        url=url if isinstance(url, str) else None,
        body=message.body,
        headers=message._properties.headers or {},
        schema=fm_message._class_to_schema_name.get(type(message), "base.message"),
        message=message,
        body_json=body_json,
    )


def test_facts_are_the_reference_facts(corpus: list[str]) -> None:
    loaded = readable_messages(corpus)
    for namespace in ("rpms", "container", "modules", "flatpaks", "tests"):
        body = {"project": {"namespace": namespace, "name": "kernel"}, "agent": "None here"}
        loaded.append(fm_message.Message(topic="org.fedoraproject.prod.pagure.x", body=body))
    for summary in ("None-None was built", "Nonexistent", "a None b", "", "none"):
        message = fm_message.Message(topic="org.fedoraproject.prod.x.y", body={"a": 1})
        loaded.append(_with_summary(message, summary))
    assert [facts_of(m, body_json="{}") for m in loaded] == [
        _reference_facts(m, "{}") for m in loaded
    ]


def _with_summary(message: Any, summary: str) -> Any:
    cls = type("Summarised", (fm_message.Message,), {"summary": property(lambda _self: summary)})
    properties = pika.BasicProperties(headers={}, message_id="summarised")
    return cls(body=message.body, topic=message.topic, properties=properties)


_BODIES = [
    b'{"a": 1}',
    b'{"n": 123456789012345678901234567890}',
    b'{"n": 1e999}',
    b'{"n": NaN}',
    b'{"s": "\\ud800"}',
    b'{"a": [1, 2}',
    b"",
    '{"é": "[[[[", "k": ["✓"]}'.encode(),
    b"[" * 64 + b"]" * 64,
    b"[" * 65 + b"]" * 65,
    b'{"a": "' + b"[" * 100 + b'"}',
    b'{"a": "\\"' + b"[" * 100 + b'"}',
    b"[" * 70 + b'"unterminated',
    b"{" * 3000 + b"}" * 3000,
]


def _outcome(read: Any) -> tuple[str, str]:
    try:
        return "ok", repr(read())
    except (ValueError, MalformedMessage) as exc:
        return type(exc).__name__, str(exc)


def test_loads_bounded_is_the_depth_check_then_the_strict_parse(corpus: list[str]) -> None:
    bodies = _BODIES + [json.dumps(json.loads(line)["body"]).encode() for line in corpus]
    for body in bodies:
        text = body.decode("utf-8")

        def reference(text: str = text) -> Any:
            check_json_text(text, max_depth=64)
            return loads_strict(text)

        def bounded(text: str = text, body: bytes = body) -> Any:
            return loads_bounded(text, body, max_depth=64)

        assert _outcome(bounded) == _outcome(reference), body[:80]


@pytest.mark.parametrize("message_id", ["an-id", None])
def test_a_message_s_properties_are_pika_s(message_id: str | None) -> None:
    headers = {"fedora_messaging_schema": "base.message"}
    built = messages.bare_properties(
        {"content_encoding": "utf-8", "headers": headers, "message_id": message_id}
    )
    expected = pika.BasicProperties(
        headers=headers, content_encoding="utf-8", message_id=message_id
    )
    assert type(built) is pika.BasicProperties
    assert list(vars(built).items()) == list(vars(expected).items())
    assert built.headers is headers
