"""Drive FMN 3.4's own consumer and rules over corpus messages, offline.

This script runs *inside FMN 3.x's virtualenv* (``benchmarks/peer_fmn3.py``
creates it and calls this with a population and the messages; it never
imports fmn_core). FMN 3's own code does the work: ``Consumer.handle_or_rollback``
(the ``consumer`` cases), its rules and tracked caches (cashews, ``mem://``), its
models (SQLite through aiosqlite, the async setup it ships), its tracking rules
and filters, its notification generation and its dist-git backend
(``PagureDBProxy`` on a SQLite copy of Pagure's tables). Two things are arranged
differently:

- The ``match`` cases run ``Consumer._handle``'s decisions in a loop of their own,
  with FMN 3's methods (``is_tracked``, ``_user_disabled``, the tracking rule's and
  the filters' ``matches``) over rules loaded once: no session per message, no
  rendering, no ``Generated`` rows.
- Setup (not timed): the tracked cache's value comes from FMN 3's
  ``prime_cache`` over those loaded rules, stored as ``CachedValue.rebuild()``
  stores it; FMN 3's ``_compute_value`` would first merge each rule into a
  session, which takes minutes at 10k users.

What stands in for the outside world:

- RabbitMQ: the consumer's ``SendQueue`` is replaced by one that keeps the
  notifications in a list (FMN 3's own tests do the same with a mock).
- FASJSON: a local HTTP server on 127.0.0.1 (``fake_fasjson.py``, its own
  process) answers ``/v1/users/<name>/`` for every user of the population (FMN 3
  asks whether each rule's owner still exists). Before timing, every user's
  answer is put in FMN 3's own cashews cache through its cached ``get_user``,
  with the HTTP fetch answered in-process (httpx over loopback costs ~10 ms a
  request here: minutes for 10k users); later misses go over HTTP.
- Kerberos: ``httpx_gssapi`` needs ``gssapi``, which builds only where
  ``krb5-config`` exists. Without it, a stand-in ``HTTPSPNEGOAuth`` that does
  nothing is used; the loopback FASJSON never asks for authentication, so the
  real one would do nothing either.
- ``Destination.generate``'s patch download (an internet fetch for messages with
  a ``patch_url``) returns no extra text.

Timing hooks, which add one clock comparison each: the merge loop of
``RulesCache.get_rules`` and the two ``get_implementation`` methods check a
deadline so that a case stops when its time budget is spent. A message that is
cut off is reported as *censored*, with the time it took so far and how many
rules it had merged and evaluated, from which ``peer_fmn3.py`` projects its full
time. In the ``*-memo`` cases those ``get_implementation`` methods also keep the
class found through ``importlib.metadata.entry_points`` instead of looking it up
again for every rule and every message (what FMN 3.4 does, ~7 ms a lookup).

Output: JSON lines in ``--out`` (setup timings, one line per message and case,
FMN 3's own view of each message's usernames/packages/agent).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any

CASES = ("consumer", "match", "consumer-memo", "match-memo")


class BudgetExceeded(Exception):
    """A case's time budget ran out in the middle of a message."""


class _State:
    deadline: float = float("inf")
    memo: bool = False
    #: Progress through the message in hand, to project a cut-off message's time.
    merged: int = 0
    evaluated: int = 0
    merge_done: float | None = None

    def start_message(self) -> None:
        self.merged = self.evaluated = 0
        self.merge_done = None


STATE = _State()


def _check_deadline() -> None:
    if time.perf_counter() > STATE.deadline:
        raise BudgetExceeded()


# --- the world outside FMN 3 --------------------------------------------------


def _start_fasjson(work: Path, usernames: list[str]) -> subprocess.Popen[str]:
    """The loopback FASJSON (``fake_fasjson.py``), in its own process; first line: its port."""
    names = work / "fasjson-users.json"
    names.write_text(json.dumps(usernames), encoding="utf-8")
    server = subprocess.Popen(
        [sys.executable, "-I", str(Path(__file__).with_name("fake_fasjson.py")), str(names)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    port = int(server.stdout.readline())
    server.port = port  # type: ignore[attr-defined]
    return server


def _configure_environment(work: Path, fasjson_url: str) -> dict[str, str]:
    """Point FMN 3's settings and fedora-messaging's config at local things only."""
    fm_conf = work / "fedora-messaging.toml"
    fm_conf.write_text(
        '[consumer_config]\nsend_queue = { amqp_url = "amqp://127.0.0.1:1/unused" }\n',
        encoding="utf-8",
    )
    env = {
        "FEDORA_MESSAGING_CONF": str(fm_conf),
        "DATABASE__SQLALCHEMY__URL": f"sqlite:///{work / 'fmn3.sqlite'}",
        "SERVICES__FASJSON_URL": fasjson_url,
        "SERVICES__DISTGIT_DB_URL": f"sqlite+aiosqlite:///{work / 'pagure.sqlite'}",
        # cashews' memory backend keeps 1000 keys by default (LRU); FMN 3 in
        # production uses Redis, which has no such cap. Enough for every
        # user and package here, so no timed lookup is a miss caused by size.
        "CACHE__SETUP_ARGS": json.dumps({"size": 10_000_000}),
    }
    os.environ.update(env)
    return env


def _gssapi_shim() -> str:
    try:
        import httpx_gssapi  # noqa: F401
    except ImportError:
        import httpx

        class HTTPSPNEGOAuth(httpx.Auth):
            """Stand-in: the local FASJSON never answers 401, so no negotiation happens."""

        shim = types.ModuleType("httpx_gssapi")
        shim.HTTPSPNEGOAuth = HTTPSPNEGOAuth  # type: ignore[attr-defined]
        sys.modules["httpx_gssapi"] = shim
        return "stand-in (gssapi not installed: no krb5-config to build it)"
    return "real httpx_gssapi"


# --- databases ----------------------------------------------------------------


def _build_fmn3_db(url: str, population: dict[str, Any]) -> dict[str, int]:
    """FMN 3's tables, created from its models, filled with the population's rules."""
    import sqlalchemy as sa
    from fmn.database.main import Base
    from fmn.database.model import (
        Destination,
        Filter,
        GenerationRule,
        Rule,
        TrackingRule,
        User,
    )

    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    users, rules, trackings, generations, filters, destinations = [], [], [], [], [], []
    for user in population["users"]:
        users.append({"id": user["id"], "name": user["name"]})
    for rule_id, rule in enumerate(population["rules"], start=1):
        rules.append(
            {
                "id": rule_id,
                "name": rule["name"],
                "disabled": rule["disabled"],
                "user_id": rule["user_id"],
            }
        )
        name, params = rule["tracking"]
        trackings.append({"id": rule_id, "rule_id": rule_id, "name": name, "params": params})
        generations.append({"id": rule_id, "rule_id": rule_id})
        for filter_name, filter_params in rule["filters"]:
            filters.append(
                {"generation_rule_id": rule_id, "name": filter_name, "params": filter_params}
            )
        destinations.append(
            {
                "generation_rule_id": rule_id,
                "protocol": rule["protocol"],
                "address": rule["address"],
            }
        )
    with engine.begin() as connection:
        for model, rows in (
            (User, users),
            (Rule, rules),
            (TrackingRule, trackings),
            (GenerationRule, generations),
            (Filter, filters),
            (Destination, destinations),
        ):
            if rows:
                connection.execute(sa.insert(model.__table__), rows)
    engine.dispose()
    return {"users": len(users), "rules": len(rules), "filters": len(filters)}


def _build_pagure_db(url: str, ownership: dict[str, list[str]]) -> dict[str, int]:
    """Pagure's ownership tables (the subset FMN 3's PagureDBProxy reads), from the map."""
    import sqlalchemy as sa
    from fmn.backends.pagure_models import (
        BASE,
        PagureGroup,
        Project,
        ProjectGroup,
        ProjectUser,
        User,
    )

    engine = sa.create_engine(url)
    BASE.metadata.create_all(engine)
    user_owners: dict[str, list[str]] = {}
    group_owners: dict[str, list[str]] = {}
    for owner, packages in ownership.items():
        for package in packages:
            if owner.startswith("@"):
                group_owners.setdefault(package, []).append(owner[1:])
            else:
                user_owners.setdefault(package, []).append(owner)
    names = sorted({o for o in ownership if not o.startswith("@")} | {"releng-bot"})
    user_id = {name: i for i, name in enumerate(names, start=1)}
    groups = sorted({o[1:] for o in ownership if o.startswith("@")})
    group_id = {name: i for i, name in enumerate(groups, start=1)}
    projects, project_users, project_groups = [], [], []
    packages = sorted(set(user_owners) | set(group_owners))
    for project_id, package in enumerate(packages, start=1):
        owners = sorted(user_owners.get(package, []))
        # The first owner is the project's creator (Pagure's "owner" role);
        # the others have commit access. Group-only packages belong to a bot.
        creator = owners[0] if owners else "releng-bot"
        projects.append(
            {
                "id": project_id,
                "user_id": user_id[creator],
                "namespace": "rpms",
                "name": package,
                "is_fork": False,
            }
        )
        project_users.extend(
            {"project_id": project_id, "user_id": user_id[o], "access": "commit"}
            for o in owners[1:]
        )
        project_groups.extend(
            {"project_id": project_id, "group_id": group_id[g], "access": "commit"}
            for g in sorted(group_owners.get(package, []))
        )
    with engine.begin() as connection:
        connection.execute(
            sa.insert(User.__table__), [{"id": i, "user": n} for n, i in user_id.items()]
        )
        if groups:
            connection.execute(
                sa.insert(PagureGroup.__table__),
                [
                    {
                        "id": i,
                        "group_name": g,
                        "group_type": "user",
                        "user_id": user_id["releng-bot"],
                    }
                    for g, i in group_id.items()
                ],
            )
        for model, rows in (
            (Project, projects),
            (ProjectUser, project_users),
            (ProjectGroup, project_groups),
        ):
            if rows:
                connection.execute(sa.insert(model.__table__), rows)
    engine.dispose()
    return {
        "projects": len(projects),
        "user_access": len(project_users),
        "group_access": len(project_groups),
    }


# --- messages -----------------------------------------------------------------


def _load_messages(path: Path) -> tuple[list[Any], dict[str, int]]:
    """Build each message as its schema class, the way a consumer receives it."""
    import pika
    from fedora_messaging import message as fm_message

    fm_message.load_message_classes()
    messages, unknown, deprecated = [], 0, 0
    for line in path.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        headers = dict(data["headers"])
        cls = fm_message._schema_name_to_class.get(headers.get("fedora_messaging_schema", ""))
        if cls is None:
            unknown += 1
            cls = fm_message.Message
        properties = pika.BasicProperties(
            headers=headers, content_encoding="utf-8", message_id=data["id"]
        )
        with warnings.catch_warnings():  # deprecated schema classes say so when built
            warnings.simplefilter("ignore", DeprecationWarning)
            msg = cls(
                body=data["body"],
                topic=data["topic"],
                properties=properties,
                severity=data.get("severity"),
            )
        msg.id = data["id"]
        messages.append(msg)
        deprecated += bool(getattr(msg, "deprecated", False))
    return messages, {
        "messages": len(messages),
        "schema_unknown_here": unknown,
        "deprecated": deprecated,
    }


def _view(message: Any) -> dict[str, Any]:
    """FMN 3's view of a message: the properties its tracking rules read."""

    def safe(name: str) -> Any:
        try:
            value = getattr(message, name)
        except Exception as exc:  # schema code over real bodies may raise
            return f"!{type(exc).__name__}"
        if isinstance(value, (list, set, tuple, frozenset)):
            return sorted(str(v) for v in value)
        return value

    return {
        name: safe(name)
        for name in (
            "app_name",
            "agent_name",
            "usernames",
            "packages",
            "containers",
            "modules",
            "flatpaks",
            "deprecated",
            "severity",
        )
    }


# --- the run ------------------------------------------------------------------


def _install_hooks() -> None:
    """Deadline checks (and, in *-memo cases, one entry-point lookup per name)."""
    from importlib.metadata import entry_points

    from fmn.cache.rules import RulesCache
    from fmn.database.model.filter import Filter
    from fmn.database.model.tracking_rule import TrackingRule

    classes: dict[tuple[str, str], Any] = {}

    def impl_class(group: str, name: str) -> Any:
        key = (group, name)
        if key not in classes:
            eps = entry_points(group=group, name=name)
            if len(eps) != 1:
                raise ValueError(f"Unknown {group} entry: {name}")
            classes[key] = eps[name].load()
        return classes[key]

    shipped_tracking = TrackingRule.get_implementation
    shipped_filter = Filter.get_implementation

    def tracking_implementation(self: Any, requester: Any) -> Any:
        _check_deadline()
        STATE.evaluated += 1
        if STATE.memo:
            cls = impl_class("fmn.tracking_rules", self.name)
            return cls(requester, self.params, self.rule.user.name)
        return shipped_tracking(self, requester)

    def filter_implementation(self: Any, requester: Any) -> Any:
        _check_deadline()
        if STATE.memo:
            cls = impl_class("fmn.filters", self.name)
            return cls(
                requester=requester,
                params=self.params,
                username=self.generation_rule.rule.user.name,
            )
        return shipped_filter(self, requester)

    async def get_rules(self: Any, db: Any) -> list[Any]:
        # FMN 3.4's body, ``[await db.merge(r) for r in await self.get_value(db=db)]``,
        # with a deadline check between merges.
        merged = []
        for rule in await self.get_value(db=db):
            _check_deadline()
            merged.append(await db.merge(rule))
            STATE.merged += 1
        STATE.merge_done = time.perf_counter()
        return merged

    TrackingRule.get_implementation = tracking_implementation
    Filter.get_implementation = filter_implementation
    RulesCache.get_rules = get_rules


async def _run(args: argparse.Namespace, population: dict[str, Any], out: Any) -> None:
    from cashews import cache
    from cashews.ttl import ttl_to_seconds
    from fmn.cache.tracked import Tracked
    from fmn.cache.util import cache_arg
    from fmn.consumer.consumer import Consumer
    from fmn.core.constants import ArtifactType
    from fmn.database.model import Rule
    from fmn.database.model import destination as destination_module

    def emit(record: dict[str, Any]) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    async def no_extra(message: Any) -> str:
        return ""

    destination_module.get_extra = no_extra  # an internet fetch; see the docstring

    class CollectingSendQueue:
        """In place of RabbitMQ: keeps what FMN 3 would publish to its senders."""

        def __init__(self, config: dict[str, Any]) -> None:
            self.sent: list[Any] = []

        async def connect(self) -> None:
            pass

        async def send(self, notification: Any) -> None:
            self.sent.append(notification)

        async def close(self) -> None:
            pass

    class OfflineConsumer(Consumer):
        _SEND_QUEUE_CLASS = CollectingSendQueue

    _install_hooks()
    messages, load_info = _load_messages(Path(args.messages))
    emit({"kind": "load", **load_info})
    for message in messages:
        emit({"kind": "view", "id": message.id, **_view(message)})

    consumer = OfflineConsumer()
    await consumer._ready
    requester = consumer._requester

    # The rules cache, built by FMN 3's own query (as on the consumer's first message).
    STATE.memo = True  # setup only: the values are the same, the entry-point lookups fewer
    started = time.perf_counter()
    async with consumer.db_manager.Session.begin() as db:
        rules = await consumer._rules_cache.get_value(db=db)
    rules_seconds = time.perf_counter() - started

    # The "match" cases evaluate the rules the consumer would, without its
    # per-message database session: the same query, run once, objects kept in
    # a session (detached ones can't reach their parents). The consumer cases
    # run after they are dropped, so the consumer's heap holds what it would.
    keep_session = consumer.db_manager.Session()
    loaded = list(
        (await keep_session.execute(Rule.select_related().filter_by(disabled=False))).scalars()
    )
    rules_total = len(loaded)

    # The tracked cache: FMN 3's TrackedCache._compute_value merges every rule
    # into a session and calls its tracking rule's prime_cache. Merging costs
    # milliseconds per rule (see the consumer cases), minutes at 10k users, so
    # prime_cache runs here over the rules already loaded, and the value is
    # stored under the cache key the way CachedValue.rebuild() stores it.
    started = time.perf_counter()
    tracked = Tracked()
    for rule in loaded:
        await rule.tracking_rule.prime_cache(tracked, requester)
    await cache.set(
        consumer._tracked_cache._cache_key,
        value=tracked,
        expire=ttl_to_seconds(cache_arg("ttl", "tracked")()),
    )
    tracked_seconds = time.perf_counter() - started

    # Steady state: every user's FASJSON answer and every artifact's owners cached.
    # FASJSON answers go into FMN 3's cache through its own cached get_user, with
    # the HTTP fetch answered in-process: httpx over loopback costs ~10 ms a
    # request here, minutes for 10k users. Later misses (after a fas.user.*
    # message invalidates an entry) do go to the loopback FASJSON.
    started = time.perf_counter()
    fasjson = requester.fasjson

    async def answer(url: str, **kwargs: Any) -> dict[str, str]:
        return {"username": url.strip("/").split("/")[-1]}

    fasjson.get_payload = answer
    try:
        for user in population["users"]:
            await fasjson.get_user(username=user["name"])
    finally:
        del fasjson.get_payload
    sample = [f"no-such-user-{i}" for i in range(20)]  # what a miss costs, over HTTP
    miss_started = time.perf_counter()
    for name in sample:
        await fasjson.get_user(username=name)
    fasjson_miss = (time.perf_counter() - miss_started) / len(sample)
    fasjson_seconds = time.perf_counter() - started
    started = time.perf_counter()
    paths = set()
    for message in messages:
        for artifact_type in ArtifactType:
            try:
                for name in getattr(message, artifact_type.name):
                    paths.add(f"{artifact_type.value}/{name}")
            except Exception:  # the consumer would fail on this message anyway
                pass
    paths_list = sorted(paths)
    for i in range(0, len(paths_list), 32):
        batch = paths_list[i : i + 32]
        await asyncio.gather(*(requester.distgit.get_project_users(project_path=p) for p in batch))
        await asyncio.gather(*(requester.distgit.get_project_groups(project_path=p) for p in batch))
    distgit_seconds = time.perf_counter() - started
    STATE.memo = False

    tracked_of: dict[str, bool | None] = {}
    for message in messages:
        try:
            tracked_of[message.id] = await consumer.is_tracked(message, None)
        except Exception:  # a schema property raising; the consumer fails there too
            tracked_of[message.id] = None
        emit({"kind": "tracked", "id": message.id, "tracked": tracked_of[message.id]})
    emit(
        {
            "kind": "setup",
            "active_rules": len(rules),
            "loaded_rules": len(loaded),
            "tracked": {k: len(v) for k, v in vars(tracked).items()},
            "rules_cache_seconds": rules_seconds,
            "tracked_cache_seconds": tracked_seconds,
            "fasjson_warm_seconds": fasjson_seconds,
            "fasjson_http_miss_seconds": fasjson_miss,
            "distgit_warm_seconds": distgit_seconds,
            "distgit_paths": len(paths_list),
        }
    )

    async def match(message: Any) -> set[tuple[str, str]]:
        # Consumer._handle's decisions (is_tracked, deprecated, _user_disabled,
        # Rule.handle's tracking rule, GenerationRule.handle's filters), without
        # generating the notification contents or recording Generated rows.
        found: set[tuple[str, str]] = set()
        if not await consumer.is_tracked(message, None):  # the value is cached
            return found
        if message.deprecated:
            return found
        for rule in loaded:
            if await consumer._user_disabled(user=rule.user):
                continue
            if not await rule.tracking_rule.matches(message, requester):
                continue
            for generation_rule in rule.generation_rules:
                filters = generation_rule.filters
                if filters and not all([f.matches(message, requester) for f in filters]):
                    continue
                found.update((d.protocol, d.address) for d in generation_rule.destinations)
        return found

    async def consume(message: Any) -> set[tuple[str, str]]:
        queue = consumer.send_queue
        queue.sent.clear()
        await consumer.handle_or_rollback(message)
        found = set()
        for notification in queue.sent:
            content = notification.content
            address = content.headers.To if notification.protocol == "email" else content.to
            found.add((notification.protocol, address))
        return found

    # Each case first takes the messages the tracked cache drops (cheap, all of
    # them), then the tracked ones in a seeded random order until its budget is
    # spent: a tracked message runs every enabled rule, and may take minutes.
    untracked = [m for m in messages if tracked_of[m.id] is False]
    rest = [m for m in messages if tracked_of[m.id] is not False]
    random.Random(args.seed).shuffle(rest)
    # Match cases first, while their rules are loaded; then the consumer's.
    for case in sorted(args.cases, key=lambda c: (c.startswith("consumer"), c)):
        if case.startswith("consumer") and loaded:
            loaded.clear()
            await keep_session.close()  # (closing twice is harmless)
        gc.collect()
        STATE.memo = case.endswith("-memo")
        handler = consume if case.startswith("consumer") else match
        budget_end = time.perf_counter() + args.budget
        STATE.deadline = budget_end
        done = 0
        for message in untracked + rest:
            if time.perf_counter() >= budget_end:
                break
            STATE.start_message()
            started = time.perf_counter()
            try:
                found = await handler(message)
            except BudgetExceeded:
                now = time.perf_counter()
                emit(
                    {
                        "kind": "censored",
                        "case": case,
                        "id": message.id,
                        "elapsed": now - started,
                        "merged": STATE.merged,
                        "evaluated": STATE.evaluated,
                        "rules": rules_total,
                        "merge_seconds": (
                            STATE.merge_done - started if STATE.merge_done is not None else None
                        ),
                    }
                )
                async for key in cache.scan("locked:*"):  # as `fmn cache delete-locks`
                    await cache.delete(key)
                break
            except Exception as exc:  # FMN 3 raising on a message: recorded, not hidden
                emit(
                    {
                        "kind": "message",
                        "case": case,
                        "id": message.id,
                        "seconds": time.perf_counter() - started,
                        "tracked": tracked_of[message.id],
                        "recipients": None,
                        "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                    }
                )
                done += 1
                continue
            elapsed = time.perf_counter() - started
            emit(
                {
                    "kind": "message",
                    "case": case,
                    "id": message.id,
                    "seconds": elapsed,
                    "tracked": tracked_of[message.id],
                    "recipients": sorted(found),
                    "error": None,
                    "merge_seconds": (
                        STATE.merge_done - started if STATE.merge_done is not None else None
                    ),
                }
            )
            done += 1
        STATE.deadline = float("inf")
        emit({"kind": "case_end", "case": case, "measured": done, "of": len(messages)})
        print(f"  FMN 3 {case}: {done} message(s) in the budget", file=sys.stderr, flush=True)
    await keep_session.close()  # (closing twice is harmless)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a fresh directory for the databases")
    parser.add_argument("--population", required=True, help="population JSON from peer_fmn3.py")
    parser.add_argument("--messages", required=True, help="messages JSONL from peer_fmn3.py")
    parser.add_argument("--out", required=True, help="where to write the JSON-lines results")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per case")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {', '.join(CASES)}")

    logging.basicConfig(level=logging.CRITICAL)  # FMN 3's per-message logs would be timed
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    population = json.loads(Path(args.population).read_text(encoding="utf-8"))
    server = _start_fasjson(work, [u["name"] for u in population["users"]])
    env = _configure_environment(work, f"http://127.0.0.1:{server.port}")  # type: ignore[attr-defined]
    gssapi = _gssapi_shim()

    with open(args.out, "w", encoding="utf-8") as out:
        from importlib.metadata import version

        import fmn

        started = time.perf_counter()
        db_counts = _build_fmn3_db(env["DATABASE__SQLALCHEMY__URL"], population)
        pagure_counts = _build_pagure_db(
            env["SERVICES__DISTGIT_DB_URL"].replace("+aiosqlite", ""), population["ownership"]
        )
        out.write(
            json.dumps(
                {
                    "kind": "environment",
                    "fmn": version("fmn"),
                    "fmn_path": str(Path(fmn.__file__).parent),
                    "python": sys.version.split()[0],
                    "gssapi": gssapi,
                    "sqlalchemy": version("sqlalchemy"),
                    "fedora_messaging": version("fedora-messaging"),
                    "cashews": version("cashews"),
                    "distributions": len(
                        list(__import__("importlib.metadata").metadata.distributions())
                    ),
                    "db": db_counts,
                    "pagure": pagure_counts,
                    "build_seconds": time.perf_counter() - started,
                }
            )
            + "\n"
        )
        out.flush()
        try:
            asyncio.run(_run(args, population, out))
        finally:
            server.communicate(timeout=10)  # closing its stdin stops it


if __name__ == "__main__":
    main()
