"""What ingest stores for feeds and the live feed to show: bounded, one line, safe links."""

from __future__ import annotations

import pytest

from fmn_core.display import (
    APP_MAX_CHARS,
    SUMMARY_MAX_CHARS,
    URL_MAX_CHARS,
    display_fields,
    display_of,
)
from fmn_core.messages import MessageFacts, facts_of, load_message

TOPIC = "org.fedoraproject.prod.bodhi.update.comment"


def _facts(summary: str, url: str | None, app: str) -> MessageFacts:
    facts = facts_of(load_message({"topic": TOPIC, "body": {}}))
    facts.summary, facts.url, facts.app_name = summary, url, app
    return facts


def test_fields_are_cleaned_and_bounded() -> None:
    long_summary = "word " * SUMMARY_MAX_CHARS
    summary, url, app = display_fields(
        _facts(f"two\nlines\x00 and {long_summary}", "https://x.org/a", "k" * 200)
    )
    assert "\n" not in summary and "\x00" not in summary
    assert summary.startswith("two lines and word")
    assert len(summary) <= SUMMARY_MAX_CHARS
    assert url == "https://x.org/a"
    assert len(app) <= APP_MAX_CHARS and app.startswith("kkk")


def test_empty_summary_and_app_fall_back_to_the_topic() -> None:
    assert display_fields(_facts("", None, "")) == (TOPIC, None, "bodhi")


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,x",
        "https://x.org/a b",
        "https://x.org/\x07",
        "ftp://x.org/a",
        "https:///no-host",
        "https://x.org/" + "a" * URL_MAX_CHARS,
    ],
)
def test_unsafe_links_are_dropped(url: str) -> None:
    assert display_fields(_facts("s", url, "a"))[1] is None


def test_display_of_carries_the_same_fields() -> None:
    facts = _facts("a summary", "http://x.org/", "koji")
    shown = display_of(facts)
    assert (shown.summary, shown.url, shown.app) == ("a summary", "http://x.org/", "koji")
