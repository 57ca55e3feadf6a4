"""Package ownership: dist-git's owner-alias JSON, the package_owners table, the cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fmn_core import ownership
from fmn_core.config import Config, OwnershipConfig
from fmn_core.db import Database
from fmn_core.errors import ConfigError
from fmn_core.messages import MessageFacts, facts_of, load_message
from fmn_core.models import PackageOwner
from fmn_core.ownership import (
    DistGitOwnership,
    OwnershipCache,
    OwnershipQueries,
    OwnershipSourceError,
    Triple,
    affects_ownership,
    ownership_provider,
    parse_owner_alias,
    refresh_ownership,
)

from .conftest import Exchange, LocalServer

#: The shape https://src.fedoraproject.org/extras/pagure_owner_alias.json has.
OWNER_ALIAS: dict[str, Any] = {
    "rpms": {
        "kernel": ["jforbes", "@kernel-maint", "jwboyer"],
        "bash": ["siteshwar", "kdudka"],
        "python3.13": ["thrnciar", "@python-packagers-sig"],
        "orphaned": [],
    },
    "modules": {"nodejs": ["sgallagh"]},
    "container": {"fedora-toolbox": ["debarshir"]},
    "flatpaks": {"firefox": ["@flatpak-sig"]},
}


def _json_route(document: Any, status: int = 200) -> Any:
    def answer(exchange: Exchange) -> tuple[int, str, bytes]:
        return status, "application/json", json.dumps(document).encode()

    return answer


class ListProvider:
    """A provider handing out fixed triples (the seam refresh_ownership reads through)."""

    def __init__(self, triples: list[Triple]) -> None:
        self.triples = triples

    def fetch(self) -> list[Triple]:
        return list(self.triples)


class BrokenProvider:
    """Yields some rows, then fails: the table must come out untouched."""

    def fetch(self) -> Iterator[Triple]:
        yield ("rpms", "zsh", "someone")
        raise OwnershipSourceError("broken://", "the connection dropped")


# --- parsing --------------------------------------------------------------------------------


def test_parse_owner_alias_flattens_every_namespace() -> None:
    triples = parse_owner_alias(OWNER_ALIAS)
    assert ("rpms", "kernel", "@kernel-maint") in triples
    assert ("rpms", "python3.13", "thrnciar") in triples
    assert ("modules", "nodejs", "sgallagh") in triples
    assert ("container", "fedora-toolbox", "debarshir") in triples
    assert ("flatpaks", "firefox", "@flatpak-sig") in triples
    assert len(triples) == 10  # "orphaned" has no owners, so no rows
    assert triples == sorted(set(triples))


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ([["kernel", "jforbes"]], "expected a JSON object of namespaces, got a list"),
        ({"rpms": ["kernel"]}, "rpms: expected an object of packages, got a list"),
        ({"rpms": {"kernel": "jforbes"}}, "rpms/kernel: expected a list of owner names, got text"),
        ({"rpms": {"kernel": None}}, "rpms/kernel: expected a list of owner names, got null"),
        ({"rpms": {"kernel": ["jforbes", 7]}}, "rpms/kernel: owner names must be non-empty text"),
        ({"rpms": {"kernel": [""]}}, "rpms/kernel: owner names must be non-empty text"),
    ],
)
def test_parse_owner_alias_names_what_is_wrong(document: Any, words: str) -> None:
    with pytest.raises(OwnershipSourceError) as caught:
        parse_owner_alias(document, "owners.json")
    assert words in str(caught.value)
    assert caught.value.key == "ownership.source"
    assert "owners.json" in str(caught.value)


def test_parse_owner_alias_skips_names_too_long_for_the_table() -> None:
    triples = parse_owner_alias({"rpms": {"bash": ["kdudka", "x" * 300], "y" * 300: ["kdudka"]}})
    assert triples == [("rpms", "bash", "kdudka")]


# --- reading the source -----------------------------------------------------------------------


def test_dist_git_ownership_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "pagure_owner_alias.json"
    path.write_text(json.dumps(OWNER_ALIAS), encoding="utf-8")
    assert DistGitOwnership(str(path)).fetch() == parse_owner_alias(OWNER_ALIAS)
    assert DistGitOwnership(path.as_uri()).fetch() == parse_owner_alias(OWNER_ALIAS)
    assert not DistGitOwnership(path.as_uri()).is_url


def test_dist_git_ownership_fetches_a_url(http_server: LocalServer) -> None:
    http_server.routes["/extras/pagure_owner_alias.json"] = _json_route(OWNER_ALIAS)
    provider = DistGitOwnership(f"{http_server.url}/extras/pagure_owner_alias.json")
    assert provider.is_url
    assert provider.fetch() == parse_owner_alias(OWNER_ALIAS)
    assert [(e.method, e.path) for e in http_server.received] == [
        ("GET", "/extras/pagure_owner_alias.json")
    ]


def test_dist_git_ownership_reports_invalid_json_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "owners.json"
    path.write_text('{"rpms": {"kernel": ["jforbes"', encoding="utf-8")
    with pytest.raises(OwnershipSourceError) as caught:
        DistGitOwnership(str(path)).fetch()
    assert "is not valid JSON" in str(caught.value)
    assert str(path) in str(caught.value)


def test_dist_git_ownership_reports_invalid_json_from_a_url(http_server: LocalServer) -> None:
    http_server.routes["/owners.json"] = lambda e: (200, "text/html", b"<html>maintenance</html>")
    with pytest.raises(OwnershipSourceError, match="is not valid JSON"):
        DistGitOwnership(f"{http_server.url}/owners.json").fetch()


def test_dist_git_ownership_reports_the_wrong_shape_from_a_url(http_server: LocalServer) -> None:
    http_server.routes["/owners.json"] = _json_route({"rpms": {"kernel": "jforbes"}})
    with pytest.raises(OwnershipSourceError, match="rpms/kernel: expected a list"):
        DistGitOwnership(f"{http_server.url}/owners.json").fetch()


def test_dist_git_ownership_reports_http_errors(http_server: LocalServer) -> None:
    with pytest.raises(OwnershipSourceError, match="HTTP 404"):
        DistGitOwnership(f"{http_server.url}/missing.json").fetch()
    http_server.routes["/owners.json"] = _json_route({"error": "boom"}, status=503)
    with pytest.raises(OwnershipSourceError, match="HTTP 503"):
        DistGitOwnership(f"{http_server.url}/owners.json").fetch()


def test_dist_git_ownership_reports_an_unreachable_url(closed_port: int) -> None:
    provider = DistGitOwnership(f"http://127.0.0.1:{closed_port}/owners.json", timeout=5)
    with pytest.raises(OwnershipSourceError) as caught:
        provider.fetch()
    assert "cannot be fetched" in str(caught.value)
    assert isinstance(caught.value, ConfigError)


def test_dist_git_ownership_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OwnershipSourceError, match="cannot be read"):
        DistGitOwnership(str(tmp_path / "nope.json")).fetch()


@pytest.mark.parametrize("source", ["ftp://src.example.org/owners.json", "gopher://x/y"])
def test_dist_git_ownership_names_a_scheme_it_does_not_read(source: str) -> None:
    with pytest.raises(ConfigError, match=r"ownership\.source.*:// is not read"):
        DistGitOwnership(source)


def test_dist_git_ownership_refuses_an_empty_source() -> None:
    with pytest.raises(ConfigError, match=r"ownership\.source"):
        DistGitOwnership("  ")


def test_ownership_provider_follows_the_configuration(tmp_path: Path) -> None:
    assert ownership_provider(Config()) is None
    configured = Config(ownership=OwnershipConfig(source=str(tmp_path / "o.json")))
    provider = ownership_provider(configured)
    assert isinstance(provider, DistGitOwnership)
    assert provider.source == str(tmp_path / "o.json")


# --- the table --------------------------------------------------------------------------------


def _rows(db: Database) -> dict[Triple, int]:
    with db.begin() as session:
        rows = session.execute(
            select(
                PackageOwner.namespace, PackageOwner.package, PackageOwner.owner, PackageOwner.id
            )
        )
        return {(ns, package, who): row_id for ns, package, who, row_id in rows}


def test_refresh_ownership_fills_then_diffs_the_table(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "owners.json"
    path.write_text(json.dumps(OWNER_ALIAS), encoding="utf-8")
    with db.begin() as session:
        assert refresh_ownership(session, DistGitOwnership(str(path))) == 10
    first = _rows(db)
    assert set(first) == set(parse_owner_alias(OWNER_ALIAS))

    changed = json.loads(json.dumps(OWNER_ALIAS))
    changed["rpms"]["kernel"].remove("jwboyer")  # one removed
    changed["rpms"]["bash"].append("@shells-sig")  # one added
    path.write_text(json.dumps(changed), encoding="utf-8")
    with db.begin() as session:
        assert refresh_ownership(session, DistGitOwnership(str(path))) == 2
    second = _rows(db)
    assert ("rpms", "kernel", "jwboyer") not in second
    assert ("rpms", "bash", "@shells-sig") in second
    # A diff, not a rewrite: rows that stayed keep their ids.
    kept = set(first) & set(second)
    assert len(kept) == 9
    assert all(first[triple] == second[triple] for triple in kept)

    with db.begin() as session:
        assert refresh_ownership(session, DistGitOwnership(str(path))) == 0
    assert _rows(db) == second


def test_refresh_ownership_handles_more_rows_than_one_statement(db: Database) -> None:
    many = [("rpms", f"pkg{i}", "bulk") for i in range(1200)]
    with db.begin() as session:
        assert refresh_ownership(session, ListProvider(many)) == 1200
    with db.begin() as session:
        assert refresh_ownership(session, ListProvider(many[:100])) == 1100
    assert len(_rows(db)) == 100


def test_refresh_ownership_leaves_the_table_alone_when_the_source_fails(db: Database) -> None:
    with db.begin() as session:
        refresh_ownership(session, ListProvider([("rpms", "bash", "kdudka")]))
    before = _rows(db)
    with pytest.raises(OwnershipSourceError), db.begin() as session:
        refresh_ownership(session, BrokenProvider())
    assert _rows(db) == before


def test_refresh_ownership_runs_inside_the_callers_transaction(db: Database) -> None:
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), db.begin() as session:
        refresh_ownership(session, ListProvider([("rpms", "bash", "kdudka")]))
        raise Rollback
    assert _rows(db) == {}


# --- the cache --------------------------------------------------------------------------------


def test_ownership_cache_load_answers_both_ways(db: Database) -> None:
    with db.begin() as session:
        refresh_ownership(session, ListProvider(parse_owner_alias(OWNER_ALIAS)))
    with db.begin() as session:
        cache = OwnershipCache.load(session)
    assert len(cache) == 10
    assert cache.packages_of("jforbes") == {"kernel"}
    assert cache.packages_of("@kernel-maint") == {"kernel"}
    assert cache.packages_of("@python-packagers-sig") == {"python3.13"}
    assert cache.owners_of("kernel") == {"jforbes", "@kernel-maint", "jwboyer"}
    assert cache.owners_of("orphaned") == frozenset()
    assert cache.packages_of("nobody") == frozenset()
    # Other namespaces only when asked: message.packages carries rpm names.
    assert cache.packages_of("sgallagh") == frozenset()
    assert cache.packages_of("sgallagh", "modules") == {"nodejs"}
    assert cache.owners_of("firefox", namespace="flatpaks") == {"@flatpak-sig"}


def test_ownership_queries_answer_as_the_cache_loaded_from_the_same_rows(db: Database) -> None:
    triples = [
        *parse_owner_alias(OWNER_ALIAS),
        # More owners than the cache keeps in a tuple, and a name in two namespaces.
        *(("rpms", "glibc", f"owner{i}") for i in range(7)),
        ("modules", "kernel", "jforbes"),
    ]
    with db.begin() as session:
        refresh_ownership(session, ListProvider(triples))
    with db.begin() as session:
        cache = OwnershipCache.load(session)
        queries = OwnershipQueries(session)
        owners = {owner for _ns, _package, owner in triples} | {"nobody", "@nobody"}
        packages = {package for _ns, package, _owner in triples} | {"orphaned", "missing"}
        for namespace in ("rpms", "modules", "flatpaks", "container", "nowhere"):
            for owner in sorted(owners):
                assert queries.packages_of(owner, namespace) == cache.packages_of(owner, namespace)
            for package in sorted(packages):
                assert queries.owners_of(package, namespace) == cache.owners_of(package, namespace)
        # Owners read ahead, many packages a query, answer the same.
        ahead = OwnershipQueries(session)
        for namespace in ("rpms", "modules", "flatpaks", "container", "nowhere"):
            ahead.read_owners(packages, namespace)
            for package in sorted(packages):
                assert ahead.owners_of(package, namespace) == cache.owners_of(package, namespace)
        assert queries.packages_of("jforbes") == {"kernel"}
        assert queries.packages_of("jforbes", "modules") == {"kernel"}
        assert queries.owners_of("glibc") == {f"owner{i}" for i in range(7)}
        assert queries.owners_of("orphaned") == frozenset()
    # A lookup made after a refresh reads the new rows.
    with db.begin() as session:
        refresh_ownership(session, ListProvider([("rpms", "kernel", "newcomer")]))
    with db.begin() as session:
        assert OwnershipQueries(session).owners_of("kernel") == {"newcomer"}
        assert OwnershipQueries(session).packages_of("jforbes") == frozenset()


def test_ownership_queries_answer_nobody_for_names_no_database_can_take(db: Database) -> None:
    """Package and owner names come from bus messages: a lone surrogate (SQLite can't
    encode it) or a NUL (PostgreSQL refuses it) owns nothing, and the lookups around
    it, a preview's read-ahead included, still answer."""
    with db.begin() as session:
        refresh_ownership(session, ListProvider([("rpms", "kernel", "jforbes")]))
    hostile = ["kern\ud800el", "kernel\x00", "\x1b[2Jkernel"]
    with db.begin() as session:
        queries = OwnershipQueries(session)
        queries.read_owners([*hostile, "kernel"])
        assert queries.owners_of("kernel") == {"jforbes"}
        for name in hostile:
            assert queries.owners_of(name) == frozenset()
            assert queries.packages_of(name) == frozenset()


def test_ownership_cache_of_an_empty_table_knows_nobody(db: Database) -> None:
    with db.begin() as session:
        cache = OwnershipCache.load(session)
    assert len(cache) == 0
    assert cache.packages_of("jforbes") == frozenset()


def test_ownership_cache_answers_one_and_many_names_alike() -> None:
    # One owner, a few owners, many owners, an owner of one package, of a few, of
    # many, and the same names in another namespace: every answer is a frozenset.
    cache = OwnershipCache(
        [
            ("rpms", "solo", "alice"),
            ("rpms", "shared", "alice"),
            ("rpms", "shared", "bob"),
            ("rpms", "shared", "@sig"),
            ("rpms", "lonely", "carol"),
            ("modules", "solo", "dave"),
            ("modules", "lonely", "carol"),
            ("modules", "lonely", "erin"),
            *(("rpms", f"many{i}", "frank") for i in range(6)),
            *(("rpms", "crowded", f"user{i}") for i in range(6)),
        ]
    )
    assert len(cache) == 20
    assert cache.packages_of("frank") == {f"many{i}" for i in range(6)}
    assert cache.owners_of("crowded") == {f"user{i}" for i in range(6)}
    assert cache.packages_of("user3") == {"crowded"}
    assert cache.owners_of("solo") == frozenset({"alice"})
    assert cache.owners_of("shared") == frozenset({"alice", "bob", "@sig"})
    assert cache.packages_of("alice") == frozenset({"solo", "shared"})
    assert cache.packages_of("bob") == frozenset({"shared"})
    assert cache.packages_of("@sig") == frozenset({"shared"})
    assert cache.owners_of("solo", "modules") == frozenset({"dave"})
    assert cache.owners_of("lonely", "modules") == frozenset({"carol", "erin"})
    assert cache.packages_of("carol", "modules") == frozenset({"lonely"})
    assert cache.packages_of("dave") == frozenset()
    assert cache.owners_of("solo", "flatpaks") == frozenset()
    for answer in (cache.owners_of("solo"), cache.packages_of("bob"), cache.owners_of("x")):
        assert isinstance(answer, frozenset)
    # What rules do with the answers (generic.py, people.py) works on both shapes.
    assert not cache.packages_of("bob").isdisjoint({"shared", "other"})
    assert cache.packages_of("carol") | cache.packages_of("@sig") == {"lonely", "shared"}


def test_ownership_cache_shares_one_string_per_name() -> None:
    # Rows from the database carry a fresh copy of every name; the cache keeps one.
    def fresh(name: str) -> str:
        return "".join(list(name))

    cache = OwnershipCache(
        [(fresh("rpms"), fresh(p), fresh(o)) for p, o in [("a", "alice"), ("b", "alice")]]
        + [(fresh("rpms"), fresh("b"), fresh("bob"))]
    )
    (alice_of_a,) = cache.owners_of("a")
    alice_of_b = next(o for o in cache.owners_of("b") if o == "alice")
    assert alice_of_a is alice_of_b
    (b_of_bob,) = cache.packages_of("bob")
    b_of_alice = next(p for p in cache.packages_of("alice") if p == "b")
    assert b_of_bob is b_of_alice


def test_ownership_cache_reload_after_a_refresh_sees_new_owners(db: Database) -> None:
    def alias(owners: dict[str, list[str]]) -> ListProvider:
        return ListProvider(parse_owner_alias({"rpms": owners}))

    with db.begin() as session:
        refresh_ownership(session, alias({"solo": ["alice"], "pair": ["alice", "bob"]}))
    with db.begin() as session:
        before = OwnershipCache.load(session)
    with db.begin() as session:
        # solo gains an owner, pair loses one, bob takes a new package.
        refresh_ownership(
            session, alias({"solo": ["alice", "carol"], "pair": ["bob"], "new": ["bob"]})
        )
    with db.begin() as session:
        after = OwnershipCache.load(session)
    assert before.owners_of("solo") == {"alice"}
    assert before.owners_of("pair") == {"alice", "bob"}
    assert after.owners_of("solo") == {"alice", "carol"}
    assert after.owners_of("pair") == {"bob"}
    assert after.packages_of("alice") == {"solo"}
    assert after.packages_of("bob") == {"pair", "new"}
    assert after.packages_of("carol") == {"solo"}
    assert len(before) == 3
    assert len(after) == 4


def test_ownership_cache_load_reads_more_rows_than_one_batch(db: Database) -> None:
    # The load streams the table in batches; every row must still arrive.
    count = 2 * ownership._LOAD_BATCH + 7
    owners = {
        f"pkg{i}": [f"user{i % 97}", "@sig"] if i % 3 == 0 else [f"user{i % 97}"]
        for i in range(count)
    }
    with db.begin() as session:
        refresh_ownership(session, ListProvider(parse_owner_alias({"rpms": owners})))
    with db.begin() as session:
        cache = OwnershipCache.load(session)
    assert len(cache) == count + len(range(0, count, 3))
    assert cache.packages_of("@sig") == {f"pkg{i}" for i in range(0, count, 3)}
    assert cache.packages_of("user5") == {f"pkg{i}" for i in range(count) if i % 97 == 5}
    assert cache.owners_of(f"pkg{count - 1}") == {f"user{(count - 1) % 97}"}


def _answers(cache: OwnershipCache, triples: list[tuple[str, str, str]]) -> dict[Any, Any]:
    answers: dict[Any, Any] = {}
    for namespace, package, owner in triples:
        answers["owners", namespace, package] = cache.owners_of(package, namespace)
        answers["packages", namespace, owner] = cache.packages_of(owner, namespace)
    return answers


def test_ownership_cache_built_from_owner_runs_in_any_order() -> None:
    # The PostgreSQL load reads the rows by owner and builds each owner's set from
    # their run of rows; any order must give what the general build gives.
    triples = [
        (namespace, f"pkg{(i * 7) % 61}", f"user{i % 13}" if i % 5 else "@sig")
        for namespace in ("rpms", "container")
        for i in range(300)
    ]
    triples = sorted(set(triples))
    expected = OwnershipCache(triples)
    by_owner = sorted(triples, key=lambda t: (t[0], t[2]))
    interleaved = by_owner[::2] + by_owner[1::2]  # each owner's rows in two runs
    for rows in (by_owner, interleaved, triples, triples[::-1]):
        cache = OwnershipCache._from_owner_runs(rows)
        assert len(cache) == len(expected) == len(triples)
        assert _answers(cache, triples) == _answers(expected, triples)
    assert OwnershipCache._from_owner_runs([]).packages_of("user1") == frozenset()


def test_ownership_cache_from_owner_runs_holds_what_the_general_build_holds() -> None:
    # The PostgreSQL load keeps a package's owners as a name, then a tuple of up
    # to four, and makes a set only of the larger ones at the end, rather than
    # gathering lists to convert afterwards: each package must be held in the
    # same shape (and with the same names) as the general build holds it.
    counts = (1, 2, 3, 4, 5, 6, 9)
    triples = sorted(
        (namespace, f"pkg{count}", f"owner{i}")
        for namespace in ("rpms", "modules")
        for count in counts
        for i in range(count)
    )
    expected = OwnershipCache(triples)
    by_owner = sorted(triples, key=lambda t: (t[0], t[2]))
    for rows in (by_owner, triples, triples[::-1]):
        cache = OwnershipCache._from_owner_runs(rows)
        assert cache._by_package.keys() == expected._by_package.keys()
        for namespace, held in expected._by_package.items():
            assert held.keys() == cache._by_package[namespace].keys()
            for package, names in held.items():
                found = cache._by_package[namespace][package]
                assert type(found) is type(names), package
                assert ({found} if isinstance(found, str) else set(found)) == (
                    {names} if isinstance(names, str) else set(names)
                )
        assert [type(cache._by_package["rpms"][f"pkg{count}"]) for count in counts] == [
            str,
            tuple,
            tuple,
            tuple,
            frozenset,
            frozenset,
            frozenset,
        ]
        assert cache.owners_of("pkg9", "modules") == {f"owner{i}" for i in range(9)}
        assert cache.owners_of("pkg4") == {f"owner{i}" for i in range(4)}


def test_ownership_cache_load_shares_the_names_it_reads(db: Database) -> None:
    owners = {"kernel": ["alice", "bob"], "bash": ["alice"], "zsh": ["bob", "@sig"]}
    with db.begin() as session:
        refresh_ownership(session, ListProvider(parse_owner_alias({"rpms": owners})))
    with db.begin() as session:
        cache = OwnershipCache.load(session)
    (alice,) = (name for name in cache.owners_of("bash") if name == "alice")
    assert any(name is alice for name in cache.owners_of("kernel"))
    (kernel,) = (name for name in cache.packages_of("alice") if name == "kernel")
    assert any(name is kernel for name in cache.packages_of("bob"))
    assert cache.packages_of("bob") == {"kernel", "zsh"}
    assert cache.owners_of("zsh") == {"bob", "@sig"}


# --- which messages change ownership ----------------------------------------------------------


def _facts(topic: str, body: Any) -> MessageFacts:
    return facts_of(load_message({"topic": topic, "body": body}))


@pytest.mark.parametrize(
    ("topic", "namespace", "expected"),
    [
        ("org.fedoraproject.prod.pagure.project.user.added", "rpms", True),
        ("org.fedoraproject.prod.pagure.project.user.removed", "rpms", True),
        ("org.fedoraproject.prod.pagure.project.user.access.updated", "container", True),
        ("org.fedoraproject.prod.pagure.project.group.added", "rpms", True),
        ("org.fedoraproject.prod.pagure.project.group.removed", "flatpaks", True),
        ("org.fedoraproject.prod.pagure.project.owner.updated", "modules", True),
        ("org.fedoraproject.prod.pagure.project.new", "rpms", True),
        ("org.fedoraproject.stg.pagure.project.deleted", "rpms", True),
        ("org.fedoraproject.prod.pagure.project.user.added", "fedora-infra", False),
        ("org.fedoraproject.prod.pagure.project.user.added", None, False),
        ("io.pagure.prod.pagure.project.user.added", "rpms", False),
        ("org.fedoraproject.prod.pagure.project.edit", "rpms", False),
        ("org.fedoraproject.prod.pagure.pull-request.new", "rpms", False),
    ],
)
def test_affects_ownership_by_topic_and_namespace(
    topic: str, namespace: str | None, expected: bool
) -> None:
    body = {
        "agent": "admin",
        "new_user": "jdoe",
        "project": {"name": "kernel", "namespace": namespace, "fullname": "x/kernel"},
    }
    assert affects_ownership(_facts(topic, body)) is expected


def test_affects_ownership_on_the_corpus(corpus_facts: list[MessageFacts]) -> None:
    hits = [facts.topic for facts in corpus_facts if affects_ownership(facts)]
    # The only dist-git ACL-changing message on a package in the corpus is a new
    # rpms project; pagure's own fixtures use the fedora-infra namespace.
    assert hits == ["org.fedoraproject.prod.pagure.project.new"]


@pytest.mark.parametrize("body", [{}, {"project": "rpms/kernel"}, {"project": {"namespace": 3}}])
def test_affects_ownership_copes_with_odd_bodies(body: Any) -> None:
    assert not affects_ownership(_facts("org.fedoraproject.prod.pagure.project.user.added", body))
