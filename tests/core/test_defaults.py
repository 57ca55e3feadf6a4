"""Defaults for new users: the operator's templates, once, on first contact; never for
accounts that existed before; ordinary filters afterwards."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from fmn_core import preferences
from fmn_core.config import Config, DefaultsConfig
from fmn_core.db import Database
from fmn_core.errors import ConfigError
from fmn_core.models import User
from fmn_core.portability import import_preferences
from fmn_core.preferences import Actor


def configure(db: Database, *templates: str) -> None:
    db.config = db.config.replace(defaults=DefaultsConfig(templates=templates))
    db.sessionmaker.configure(info=db.session_info())


def names(db: Database, user: str, context: str) -> list[str]:
    with db.begin() as session:
        return [f.name for f in preferences.list_filters(session, Actor(user), context)]


def test_a_new_account_gets_the_defaults_once_and_can_edit_them(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    configure(db, "mentions:irc", "nope:email", "quiet:email")
    with caplog.at_level(logging.WARNING), db.begin() as session:
        given = preferences.first_contact(session, Actor("ana"))
    assert [g.split(":")[0] for g in given] == [
        "irc starts with the filters of the template 'mentions'",
        "email starts with the filters of the template 'quiet'",
    ]
    assert "default template 'nope' for email not given to ana" in caplog.text
    irc = names(db, "ana", "irc")
    assert irc and names(db, "ana", "email")
    with db.begin() as session:
        assert preferences.first_contact(session, Actor("ana")) == []  # once
        # Visible and editable like any other filter.
        preferences.remove_filter(session, Actor("ana"), "irc", irc[0])
    with db.begin() as session:
        assert preferences.first_contact(session, Actor("ana")) == []
    assert names(db, "ana", "irc") == irc[1:]
    # Only the actor's own first contact counts: there is no ``user=`` to name another.
    with db.begin() as session:
        preferences.first_contact(session, Actor("root", is_admin=True))
        assert session.scalars(select(User).where(User.name == "ben")).one_or_none() is None


def test_existing_accounts_never_get_defaults(db: Database) -> None:
    with db.begin() as session:
        preferences.add_filter(session, Actor("old"), "email", "mine")
        # What revision 0008 does for every account that existed before it.
        session.scalars(select(User).where(User.name == "old")).one().defaults_applied = True
        preferences.add_filter(session, Actor("early"), "email", "mine")
    with db.begin() as session:
        # First contact while no defaults are configured: done, nothing given.
        assert preferences.first_contact(session, Actor("early")) == []
        assert preferences.first_contact(session, Actor("nobody")) == []
        assert session.scalars(select(User).where(User.name == "nobody")).one_or_none() is None
    configure(db, "mentions:email")
    with db.begin() as session:
        assert preferences.first_contact(session, Actor("old")) == []
        assert preferences.first_contact(session, Actor("early")) == []
    assert names(db, "old", "email") == ["mine"] and names(db, "early", "email") == ["mine"]


def test_a_first_import_gets_defaults_where_the_file_leaves_room(db: Database) -> None:
    configure(db, "mentions:email", "mentions:irc")
    document = {
        "users": [
            {
                "name": "cy",
                "contexts": {
                    "email": {"filters": [{"name": "mine", "rules": [{"rule": "pertains_to_me"}]}]}
                },
            }
        ]
    }
    with db.begin() as session:
        import_preferences(session, document)
    assert names(db, "cy", "email") == ["mine"]  # the file's context is the file's
    assert names(db, "cy", "irc")  # the defaults went where the file said nothing
    with db.begin() as session:
        assert preferences.first_contact(session, Actor("cy")) == []


def test_defaults_are_checked_when_the_configuration_is_read() -> None:
    with pytest.raises(ConfigError, match=r"defaults.templates\[0\]"):
        DefaultsConfig(templates=("packager",))
    with pytest.raises(ConfigError, match=r"defaults.templates\[0\].*not offered"):
        Config(contexts=("email",), defaults=DefaultsConfig(templates=("packager:irc",)))
