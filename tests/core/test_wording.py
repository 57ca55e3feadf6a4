"""fmn_core.wording: the words the bot and the TUI both use for the same facts."""

from __future__ import annotations

import datetime as dt

import pytest

from fmn_core.explain import ContextExplanation, Explanation, FilterExplanation
from fmn_core.preferences import ContextView
from fmn_core.wording import count, digest_policy, explanation_lines


@pytest.mark.parametrize(
    ("number", "noun", "plural", "words"),
    [
        (0, "filter", None, "no filters"),
        (1, "filter", None, "1 filter"),
        (2, "filter", None, "2 filters"),
        (1, "address", "addresses", "1 address"),
        (12, "address", "addresses", "12 addresses"),
        (0, "address", "addresses", "no addresses"),
    ],
)
def test_count_words_numbers_of_things(
    number: int, noun: str, plural: str | None, words: str
) -> None:
    assert count(number, noun, plural) == words


@pytest.mark.parametrize(
    ("minutes", "notifications", "words", "compact"),
    [
        (0, 0, "off", "off"),
        (60, 10, "every 60 minutes or after 10 notifications", "60m or 10"),
        (60, 0, "every 60 minutes", "every 60m"),
        (0, 5, "after 5 notifications", "after 5"),
        (1, 1, "every 1 minute or after 1 notification", "1m or 1"),
    ],
)
def test_digest_policy_words_a_context_view(
    minutes: int, notifications: int, words: str, compact: str
) -> None:
    view = ContextView("email", True, minutes, notifications, (), (), None)
    assert digest_policy(view) == words
    assert digest_policy(view, compact=True) == compact


def test_explanation_lines_word_every_outcome() -> None:
    when = dt.datetime(2026, 12, 7, 19, 5, tzinfo=dt.UTC)
    contexts = (
        ContextExplanation(
            "email", "notified", "mine", (), "sent", 1, None, when, when, ("a***a@example.org",)
        ),
        ContextExplanation(
            "irc",
            "muted",
            "mine",
            (),
            "pending",
            0,
            "held: the user muted fmn until 2026-12-07 19:05 UTC",
        ),
        ContextExplanation(
            "push", "held", "mine", (), "pending", 0, "held for a digest until 2026-12-07 19:05 UTC"
        ),
        ContextExplanation("android", "dead", "mine", (), "dead", 8, "connection refused"),
        ContextExplanation("desktop", "no-destination", "mine", (), "failed", 1, None),
        ContextExplanation(
            "live", "no-match", None, (FilterExplanation("off", 1, False, False, "inactive", ()),)
        ),
        ContextExplanation("rss", "context-off", None, ()),
    )
    lines = explanation_lines(
        Explanation("ana", "m-1", "org.fedoraproject.prod.bodhi.x", "an update", True, {}, contexts)
    )
    assert lines == [
        "Message m-1 (org.fedoraproject.prod.bodhi.x): an update",
        "email: notified by filter 'mine': sent 2026-12-07 19:05 UTC to a***a@example.org.",
        "irc: matched filter 'mine', held back: you muted fmn until 2026-12-07 19:05 UTC.",
        "push: matched filter 'mine', held for a digest until 2026-12-07 19:05 UTC.",
        "android: matched filter 'mine', gave up after 8 tries (last error: connection refused).",
        "desktop: matched filter 'mine', but there is no confirmed address for desktop; "
        "confirm one to receive these.",
        "live: no filter matched.",
        "  filter 'off': not checked, it is switched off.",
        "Not set up (nothing is sent there): rss.",
    ]


def test_the_topic_matches_example_is_a_real_koji_topic() -> None:
    # Koji's topics are *.buildsys.*; the old example matched no Koji message.
    from fnmatch import fnmatchcase

    from fmn_core.rules import default_catalog

    help_text = default_catalog().get("topic_matches").parameters[0].help
    example = help_text.split("e.g. ")[1].split()[0]
    assert fnmatchcase("org.fedoraproject.prod.buildsys.build.state.change", example)


def test_a_refused_name_is_told_what_a_name_may_start_with() -> None:
    import pytest

    from fmn_core.errors import InvalidArgument
    from fmn_core.rules import default_catalog

    spec = default_catalog().get("group_involved")
    with pytest.raises(InvalidArgument) as caught:
        spec.validate({"group": "@python-sig"})
    assert "starts with a letter or a digit" in str(caught.value)
    assert "not @python-sig" in str(caught.value)
    assert spec.validate({"group": "python-sig"}) == {"group": "python-sig"}
