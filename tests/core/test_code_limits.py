"""Confirmation-code limits (fmn_core.code_limits) through the preference service,
on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from fmn_core import preferences as prefs
from fmn_core.config import Config, ConfirmationConfig
from fmn_core.db import Database
from fmn_core.destinations import address_key
from fmn_core.errors import ConfigError, RateLimited, TooManyCodes
from fmn_core.models import CodeSend, Destination, utcnow
from fmn_core.preferences import Actor

ALICE = Actor("alice")
VICTIM = "victim@example.org"


def configure(db: Database, **confirmation: Any) -> None:
    changed = dataclasses.replace(db.config.confirmation, **confirmation)
    db.config = db.config.replace(confirmation=changed)
    db.sessionmaker.configure(info=db.session_info())


def run(db: Database, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with db.begin() as session:
        return function(session, *args, **kwargs)


def refused(db: Database, function: Callable[..., Any], *args: Any, **kwargs: Any) -> TooManyCodes:
    with pytest.raises(TooManyCodes) as caught, db.begin() as session:
        function(session, *args, **kwargs)
    text = str(caught.value)
    assert text.endswith(".") and text.count(". ") == 0, text  # one sentence
    assert "UTC" in text and caught.value.until > utcnow()
    assert isinstance(caught.value, RateLimited)
    return caught.value


def codes_made(db: Database) -> int:
    with db.begin() as session:
        return int(session.scalar(select(func.count()).select_from(CodeSend)) or 0)


def age_codes(db: Database, by: dt.timedelta) -> None:
    with db.begin() as session:
        for row in session.scalars(select(CodeSend)):
            row.created_at -= by


def set_and_remove(db: Database, actor: Actor, address: str) -> None:
    with db.begin() as session:
        pending = prefs.set_destination(session, actor, "email", address)
        prefs.remove_destination(session, actor, "email", pending.destination.id)


def test_code_limits_remove_and_readd_loop_makes_one_code(db: Database) -> None:
    """The issue's loop: set, remove, set... made a fresh code (a mail) every time."""
    made = refusals = 0
    for _ in range(20):
        try:
            with db.begin() as session:
                pending = prefs.set_destination(session, ALICE, "email", VICTIM)
                made += pending.code is not None
                prefs.remove_destination(session, ALICE, "email", pending.destination.id)
        except TooManyCodes as error:
            refusals += 1
            assert "wait" in str(error) and "seconds (until" in str(error)
            assert "v***m@example.org" in str(error) and VICTIM not in str(error)
    assert (made, refusals) == (1, 19)
    assert codes_made(db) == 1
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Destination)) == 0


def test_code_limits_per_address_whoever_asks(db: Database) -> None:
    configure(db, resend_interval_seconds=0, codes_per_address=3)
    for name in ("bob", "carol", "dave"):
        run(db, prefs.set_destination, Actor(name), "email", VICTIM)
    error = refused(db, prefs.set_destination, Actor("eve"), "email", VICTIM)
    assert "the most confirmation codes fmn sends to one address in 24 hours" in str(error)
    assert "ask again after" in str(error)
    # Other spellings of the same mailbox count as the same address.
    for spelling in ("Victim@Example.org", "victim+fmn@example.org", "VICTIM+2@EXAMPLE.ORG"):
        refused(db, prefs.set_destination, Actor("eve"), "email", spelling)
    # Another address is not affected.
    run(db, prefs.set_destination, Actor("eve"), "email", "eve@example.org")
    assert codes_made(db) == 4


def test_code_limits_per_user(db: Database) -> None:
    configure(db, resend_interval_seconds=0, codes_per_user=3)
    for number in range(3):
        set_and_remove(db, ALICE, f"a{number}@example.org")
    error = refused(db, prefs.set_destination, ALICE, "email", "a9@example.org")
    assert "You have asked for 3 confirmation codes in 24 hours" in str(error)
    # Nothing was written by the refusal; another user is not affected.
    assert run(db, prefs.get_context, ALICE, "email").destinations == ()
    run(db, prefs.set_destination, Actor("bob"), "email", "a9@example.org")


def test_code_limits_resend_obeys_the_same_limits(db: Database) -> None:
    configure(db, resend_interval_seconds=60, codes_per_address=3, codes_per_address_per_user=2)
    run(db, prefs.set_destination, ALICE, "email", VICTIM)
    refused(db, prefs.resend_confirmation, ALICE, "email")
    refused(db, prefs.set_destination, ALICE, "email", VICTIM)  # again for the pending one
    age_codes(db, dt.timedelta(seconds=61))
    run(db, prefs.resend_confirmation, ALICE, "email")
    age_codes(db, dt.timedelta(seconds=61))
    error = refused(db, prefs.resend_confirmation, ALICE, "email")
    assert "You have asked for 2 confirmation codes to v***m@example.org" in str(error)
    assert codes_made(db) == 2


def test_code_limits_end_with_the_window_and_old_rows_go(db: Database) -> None:
    configure(db, resend_interval_seconds=0, codes_per_address=2, code_window_hours=1)
    set_and_remove(db, ALICE, VICTIM)
    set_and_remove(db, Actor("bob"), VICTIM)
    error = refused(db, prefs.set_destination, Actor("carol"), "email", VICTIM)
    assert error.until - utcnow() <= dt.timedelta(hours=1)
    age_codes(db, dt.timedelta(hours=1, seconds=1))
    run(db, prefs.set_destination, Actor("carol"), "email", VICTIM)
    assert codes_made(db) == 1  # the two expired rows were dropped when the third was made


def test_code_limits_feeds_make_no_codes(db: Database) -> None:
    configure(db, codes_per_user=1)
    for _ in range(3):
        run(db, prefs.set_destination, ALICE, "rss", None)
    assert codes_made(db) == 0


def test_code_limits_keep_no_clear_address(db: Database) -> None:
    run(db, prefs.set_destination, ALICE, "email", VICTIM)
    run(db, prefs.set_destination, ALICE, "push", "ntfys://ntfy.sh/alice-topic?priority=high")
    with db.begin() as session:
        keys = set(session.scalars(select(CodeSend.address_key)))
    assert keys == {
        address_key("email", VICTIM),
        address_key("push", "ntfys://ntfy.sh/alice-topic"),
    }
    assert all(len(k) == 64 and "victim" not in k and "ntfy" not in k for k in keys)


def test_code_limits_address_key_canonical_forms() -> None:
    same = ["victim@example.org", "Victim@EXAMPLE.org", "victim+a@example.org"]
    assert len({address_key("email", a) for a in same}) == 1
    assert address_key("email", "victim@example.org") != address_key("email", "v@example.org")
    assert address_key("irc", "Alice") == address_key("irc", "alice")
    # RFC 1459: the server folds []\~ to {}|^, so these reach the same person.
    assert len({address_key("irc", a) for a in ("bob[m]", "bob{m}", "BOB{M}", "Bob[M]")}) == 1
    assert len({address_key("irc", a) for a in ("a\\~", "a|^", "A|~")}) == 1
    assert address_key("push", "ntfys://NTFY.sh/t?x=1#f") == address_key(
        "push", "ntfys://ntfy.sh/t"
    )
    assert address_key("push", "ntfys://ntfy.sh/t") != address_key("push", "ntfys://ntfy.sh/T")


@pytest.mark.parametrize(
    "key", ["codes_per_address", "codes_per_user", "code_window_hours", "ttl_minutes"]
)
def test_code_limits_config_is_checked(key: str) -> None:
    with pytest.raises(ConfigError, match=f"confirmation.{key}"):
        Config(confirmation=ConfirmationConfig(**{key: 0}))


BOB = Actor("bob")
MALLORY = Actor("mallory")
BOBS = "bob@example.org"


def test_code_limits_one_requester_cannot_use_up_an_address(db: Database) -> None:
    # Mallory adds Bob's address as her own, again and again until fmn refuses: Bob
    # must still be able to confirm it himself the same day.
    configure(db, resend_interval_seconds=0)
    made = 0
    with pytest.raises(TooManyCodes) as caught:
        for _ in range(100):
            set_and_remove(db, MALLORY, BOBS)
            made += 1
    share = db.config.confirmation.address_share
    assert made == share
    assert f"You have asked for {share} confirmation codes to b***b@example.org" in str(
        caught.value
    )
    pending = run(db, prefs.set_destination, BOB, "email", BOBS)
    assert pending.code is not None
    assert codes_made(db) == share + 1


def test_code_limits_an_address_gets_at_most_its_cap_whoever_asks(db: Database) -> None:
    # Many accounts asking each their share: the inbox still gets at most
    # codes_per_address codes in the window, Bob's own request included.
    configure(db, resend_interval_seconds=0, codes_per_address=4, codes_per_address_per_user=2)
    for name in ("mallory", "trudy"):
        for _ in range(2):
            set_and_remove(db, Actor(name), BOBS)
    error = refused(db, prefs.set_destination, BOB, "email", BOBS)
    assert "the most confirmation codes fmn sends to one address in 24 hours" in str(error)
    refused(db, prefs.set_destination, Actor("eve"), "email", BOBS)
    assert codes_made(db) == 4


def test_code_limits_share_defaults_below_the_address_cap() -> None:
    assert ConfirmationConfig().address_share < ConfirmationConfig().codes_per_address
    # A cap set lower in an existing file still leaves the owner a code.
    for cap in (2, 3, 4):
        assert 1 <= ConfirmationConfig(codes_per_address=cap).address_share < cap
    assert ConfirmationConfig(codes_per_address=1).address_share == 1
    assert ConfirmationConfig(codes_per_address_per_user=5).address_share == 5


def test_code_limits_share_may_not_reach_the_address_cap() -> None:
    with pytest.raises(ConfigError, match=r"confirmation\.codes_per_address_per_user"):
        Config(confirmation=ConfirmationConfig(codes_per_address=4, codes_per_address_per_user=4))
    with pytest.raises(ConfigError, match=r"confirmation\.codes_per_address_per_user"):
        Config(confirmation=ConfirmationConfig(codes_per_address_per_user=0))
    Config(confirmation=ConfirmationConfig(codes_per_address=1, codes_per_address_per_user=1))


def test_code_limits_share_is_read_from_the_file(tmp_path: Any) -> None:
    from fmn_core.config import load_config

    path = tmp_path / "fmn.toml"
    path.write_text("[confirmation]\ncodes_per_address = 6\ncodes_per_address_per_user = 2\n")
    assert load_config(path).confirmation.address_share == 2
    path.write_text("[confirmation]\ncodes_per_address = 2\n")  # a file from before the share
    assert load_config(path).confirmation.address_share == 1
    path.write_text('[confirmation]\ncodes_per_address_per_user = "2"\n')
    with pytest.raises(ConfigError, match=r"confirmation\.codes_per_address_per_user"):
        load_config(path)
