"""Synthetic user populations for benchmarks, built from realistic templates.

A population is a list of ``UserSnapshot`` plus the package ownership it
assumes, made directly in memory (no database) so that 100k users take
seconds. The names come from the shared corpus (its usernames, packages, apps,
topics, groups) and from generated Fedora-like names for everyone else, so
the corpus messages reach a realistic share of users.

How it scales, and why. The corpus names a fixed set of people, packages and
groups; adding users adds *other* people, with their own packages and groups:

- a package has 1-4 maintainers whatever the size (about 2.5 packages per
  packager), so a message about ``tzdata`` concerns its few maintainers;
- follow targets are drawn uniformly from the whole population, so a person
  has a few followers at any size;
- there is a group per 100 users (the corpus's groups and the SIGs among them),
  so a group keeps a few dozen members;
- app watchers, who take a whole event stream (``app_is`` + one exact
  ``topic_matches``), are a fixed number (``app_watchers``, default 50): such
  subscriptions come from a handful of admins and dashboards, not from every
  new account. Passing a share instead (``app_watchers=0.05``) makes them
  grow with the population, and every message's recipients with them.

The templates (shares of the users who are not app watchers):

- packager (45%): my packages' koji builds, bodhi updates for my packages,
  comments on my updates by others, anything naming me that I did not do,
  and a couple of my packages followed upstream (anitya) by name;
- follower (20%): one filter per followed user (``user_involved``), plus me;
- group member (10%): updates for my group's packages, messages naming the group;
- casual (25%): messages naming me, sometimes at least WARNING, sometimes my
  packages; some with a second context switched off or a filter paused.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fmn_core.errors import InvalidArgument
from fmn_core.matcher import ContextSnapshot, FilterSnapshot, RuleSnapshot, UserSnapshot
from fmn_core.messages import MessageFacts
from fmn_core.rules import default_catalog

__all__ = ["CorpusNames", "MapOwnership", "Population", "build_population", "corpus_names"]

TEMPLATE_SHARES: dict[str, float] = {
    "packager": 0.45,
    "follower": 0.20,
    "group_member": 0.10,
    "casual": 0.25,
}
#: Users per group: groups are added as the community grows.
USERS_PER_GROUP = 100

_PREFIXES = (
    "",
    "",
    "",
    "",
    "python-",
    "python-",
    "golang-github-",
    "rust-",
    "perl-",
    "ghc-",
    "nodejs-",
    "R-",
    "php-",
    "rubygem-",
    "mingw-",
    "ocaml-",
    "texlive-",
    "lib",
)
_SYLLABLES = (
    "ka",
    "lo",
    "mir",
    "ten",
    "zu",
    "gra",
    "fin",
    "pol",
    "ve",
    "sta",
    "qui",
    "dor",
    "ne",
    "bri",
    "tas",
    "mo",
    "ru",
    "lex",
    "yan",
    "cor",
    "pi",
    "tho",
    "gen",
    "sa",
)
_BODHI_COMMENT = "org.fedoraproject.prod.bodhi.update.comment"
_SIGS = (
    "python-sig",
    "golang-sig",
    "rust-sig",
    "perl-sig",
    "kde-sig",
    "gnome-sig",
    "neuro-sig",
    "astro-sig",
    "haskell-sig",
    "ruby-sig",
    "java-maint",
    "r-maint",
    "infra-sig",
    "qa",
)


class MapOwnership:
    """An ``OwnershipLookup`` over a plain owner -> packages map (``@group`` for groups)."""

    def __init__(self, packages_by_owner: dict[str, frozenset[str]]) -> None:
        self._packages = packages_by_owner
        owners: defaultdict[str, set[str]] = defaultdict(set)
        for owner, packages in packages_by_owner.items():
            for package in packages:
                owners[package].add(owner)
        self._owners = {package: frozenset(names) for package, names in owners.items()}

    @property
    def packages_by_owner(self) -> Mapping[str, frozenset[str]]:
        """The whole map, to store it (``package_owners`` rows) or copy it."""
        return self._packages

    def packages_of(self, owner: str) -> frozenset[str]:
        return self._packages.get(owner, frozenset())

    def owners_of(self, package: str) -> frozenset[str]:
        return self._owners.get(package, frozenset())


@dataclass(frozen=True)
class CorpusNames:
    """The names that occur in a set of messages, for rule arguments that can match."""

    usernames: tuple[str, ...]
    packages: tuple[str, ...]
    groups: tuple[str, ...]
    topics_by_app: dict[str, tuple[str, ...]]


def corpus_names(facts: Iterable[MessageFacts]) -> CorpusNames:
    """Collect usernames (and agents), packages, groups and each app's topics.

    Only names a rule can be given are kept (an app called "The New Hotness"
    can't be an ``app_is`` argument).
    """
    users: set[str] = set()
    packages: set[str] = set()
    groups: set[str] = set()
    topics: defaultdict[str, set[str]] = defaultdict(set)
    for fact in facts:
        users |= fact.usernames
        if fact.agent_name and all(c not in fact.agent_name for c in ":/ "):
            users.add(fact.agent_name)
        packages |= fact.packages
        groups |= fact.groups
        if fact.app_name:
            topics[fact.app_name.lower()].add(fact.topic)
    catalog = default_catalog()

    def valid(rule: str, parameter: str, value: str) -> bool:
        try:
            catalog.get(rule).validate({parameter: value})
        except InvalidArgument:
            return False
        return True

    return CorpusNames(
        usernames=tuple(sorted(u for u in users if valid("user_involved", "username", u))),
        packages=tuple(sorted(p for p in packages if valid("package_involved", "package", p))),
        groups=tuple(sorted(g for g in groups if valid("group_involved", "group", g))),
        topics_by_app={
            app: tuple(sorted(t))
            for app, t in sorted(topics.items())
            if valid("app_is", "app", app)
        },
    )


@dataclass
class Population:
    """Users' preferences and the ownership map they were built against."""

    users: list[UserSnapshot]
    ownership: MapOwnership
    templates: dict[str, int] = field(default_factory=dict)

    @property
    def filters(self) -> int:
        """How many filters the population holds (active or not)."""
        return sum(len(c.filters) for u in self.users for c in u.contexts)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables))


class _Names:
    """Hands out distinct names: a word taken already gets the next free number."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.counts: dict[str, int] = {}

    def unique(self, name: str) -> str:
        base = name
        while name in self.taken:
            self.counts[base] = self.counts.get(base, 1) + 1
            name = f"{base}{self.counts[base]}"
        self.taken.add(name)
        return name


def _rule(name: str, negated: bool = False, **arguments: str) -> RuleSnapshot:
    return RuleSnapshot(name, arguments, negated)


class _Builder:
    def __init__(self, n_users: int, names: CorpusNames, seed: int, app_watchers: float) -> None:
        self.rng = random.Random(seed)
        self.names = names
        self.next_filter_id = 1
        rng = self.rng
        people = _Names()
        # Everyone the corpus names is a user at every size (as far as n allows).
        self.usernames = [people.unique(u) for u in names.usernames[:n_users]]
        while len(self.usernames) < n_users:
            self.usernames.append(people.unique(_word(rng, rng.randint(2, 3))))
        roles = list(TEMPLATE_SHARES)
        weights = [TEMPLATE_SHARES[r] for r in roles]
        self.roles = rng.choices(roles, weights, k=n_users)
        watchers = int(app_watchers * n_users) if app_watchers < 1 else int(app_watchers)
        for i in rng.sample(range(n_users), min(n_users, watchers)):
            self.roles[i] = "app_watcher"
        packagers = [
            u
            for u, r in zip(self.usernames, self.roles, strict=True)
            if r in ("packager", "group_member")
        ] or self.usernames[:1]
        # Packages: the corpus's own plus Fedora-like names, about 2.5 per packager,
        # each with 1-4 maintainers; so a package keeps a few owners at any size.
        package_names = _Names()
        pool = [package_names.unique(p) for p in names.packages]
        while len(pool) < max(len(names.packages), int(len(packagers) * 2.5)):
            pool.append(package_names.unique(rng.choice(_PREFIXES) + _word(rng, rng.randint(2, 4))))
        owned: defaultdict[str, set[str]] = defaultdict(set)
        for package in pool:
            for owner in rng.sample(packagers, min(len(packagers), 1 + int(rng.expovariate(1.2)))):
                owned[owner].add(package)
        groups = _Names()
        sigs = [groups.unique(g) for g in (*names.groups, *_SIGS)]
        while len(sigs) < n_users // USERS_PER_GROUP:
            sigs.append(groups.unique(_word(rng, 2) + rng.choice(("-sig", "-maint", "-team"))))
        self.sigs = sigs
        for sig in sigs:
            owned["@" + sig] = set(rng.sample(pool, min(len(pool), rng.randint(5, 60))))
        self.ownership = MapOwnership({o: frozenset(p) for o, p in owned.items()})

    def filter(self, name: str, *rules: RuleSnapshot, active: bool = True) -> FilterSnapshot:
        self.next_filter_id += 1
        return FilterSnapshot(self.next_filter_id, name, rules, active)

    def user(self, user_id: int) -> UserSnapshot:
        name = self.usernames[user_id - 1]
        role = self.roles[user_id - 1]
        filters = getattr(self, "_" + role)(name)
        rng = self.rng
        contexts = [ContextSnapshot("email", tuple(filters))]
        if rng.random() < 0.3:
            # A second context with the most personal filters, sometimes switched off.
            contexts.append(
                ContextSnapshot(
                    rng.choice(("irc", "push", "android")),
                    tuple(filters[-2:]),
                    enabled=rng.random() < 0.8,
                )
            )
        return UserSnapshot(user_id, name, tuple(contexts))

    def _followed(self, count: int) -> list[str]:
        return self.rng.sample(self.usernames, min(count, len(self.usernames)))

    def _packager(self, me: str) -> list[FilterSnapshot]:
        rng = self.rng
        mine = sorted(self.ownership.packages_of(me))
        filters = [
            self.filter(
                "my builds",
                _rule("package_owned_by_me"),
                _rule("topic_matches", pattern="*.buildsys.build.state.change"),
            ),
            self.filter("my updates", _rule("package_owned_by_me"), _rule("app_is", app="bodhi")),
            self.filter(
                "comments on my updates",
                _rule("pertains_to_me"),
                _rule("topic_matches", pattern=_BODHI_COMMENT),
                _rule("triggered_by_me", negated=True),
            ),
            self.filter(
                "about me", _rule("pertains_to_me"), _rule("triggered_by_me", negated=True)
            ),
        ]
        for package in rng.sample(mine, min(len(mine), rng.randint(0, 2))):
            filters.append(
                self.filter(
                    f"{package} upstream",
                    _rule("package_involved", package=package),
                    _rule("app_is", app="anitya"),
                )
            )
        return filters

    def _follower(self, me: str) -> list[FilterSnapshot]:
        filters = [
            self.filter(f"follow {u}", _rule("user_involved", username=u))
            for u in self._followed(self.rng.randint(1, 5))
            if u != me
        ]
        filters.append(self.filter("about me", _rule("pertains_to_me")))
        return filters

    def _app_watcher(self, me: str) -> list[FilterSnapshot]:
        rng = self.rng
        filters = []
        for app in rng.sample(sorted(self.names.topics_by_app), rng.randint(1, 2)):
            topic = rng.choice(self.names.topics_by_app[app])
            filters.append(
                self.filter(
                    f"{app} events", _rule("app_is", app=app), _rule("topic_matches", pattern=topic)
                )
            )
        filters.append(self.filter("about me", _rule("pertains_to_me")))
        return filters

    def _group_member(self, me: str) -> list[FilterSnapshot]:
        sig = self.rng.choice(self.sigs)
        return [
            self.filter(
                f"{sig} updates",
                _rule("package_owned_by_group", group=sig),
                _rule("app_is", app="bodhi"),
            ),
            self.filter(f"{sig} mentions", _rule("group_involved", group=sig)),
            self.filter("my packages", _rule("package_owned_by_me")),
            self.filter(
                "about me", _rule("pertains_to_me"), _rule("triggered_by_me", negated=True)
            ),
        ]

    def _casual(self, me: str) -> list[FilterSnapshot]:
        rng = self.rng
        rules = [_rule("pertains_to_me")]
        if rng.random() < 0.3:
            rules.append(_rule("severity_at_least", level="WARNING"))
        filters = [self.filter("about me", *rules, active=rng.random() < 0.9)]
        if rng.random() < 0.3:
            filters.append(self.filter("my packages", _rule("package_owned_by_me")))
        return filters


def build_population(
    n_users: int, names: CorpusNames, seed: int = 0, app_watchers: float = 50
) -> Population:
    """``n_users`` users with ids 1..n, deterministic for a seed.

    ``app_watchers`` is a number of users (>= 1) or a share of them (< 1).
    """
    builder = _Builder(n_users, names, seed, app_watchers)
    users = [builder.user(i) for i in range(1, n_users + 1)]
    counts: dict[str, int] = defaultdict(int)
    for role in builder.roles:
        counts[role] += 1
    return Population(users, builder.ownership, dict(counts))
