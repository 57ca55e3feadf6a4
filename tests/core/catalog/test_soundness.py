"""Every built-in rule over the whole shared corpus plus the hand-built messages.

Two properties hold for every rule: no rule raises, whatever the body holds; and
every index hint is sound (a message that satisfies a rule carries one of the
rule's hint values under the hint's key, or the matcher would never look at it).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from fmn_core.errors import InvalidArgument
from fmn_core.messages import MessageFacts
from fmn_core.rules import Catalog, RuleContext, RuleSpec

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
        *sorted(
            message.usernames
            | message.packages
            | message.groups
            | message.containers
            | message.modules
            | message.flatpaks
        ),
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
    inexact: list[str] = []
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
                # None: this filter can't be indexed, so the matcher checks it always.
                hint_values = spec.index_values(arguments, context)
                if not result:
                    # An exact hint stands for the rule: a group found by its values
                    # skips it, so no message may hold them and fail the rule.
                    if (
                        spec.hint is not None
                        and spec.hint.exact
                        and hint_values is not None
                        and not hint_values.isdisjoint(keys[spec.hint.key])
                    ):
                        inexact.append(
                            f"{spec.name}({arguments}) owner={context.owner} "
                            f"on {message.id} ({message.topic})"
                        )
                    continue
                matched[spec.name] += 1
                if hint_values is not None and hint_values.isdisjoint(keys[spec.hint.key]):
                    unsound.append(
                        f"{spec.name}({arguments}) owner={context.owner} "
                        f"on {message.id} ({message.topic})"
                    )
    assert not unsound, "unsound index hints:\n" + "\n".join(unsound[:20])
    assert not inexact, "hints marked exact that hold for a failing rule:\n" + "\n".join(
        inexact[:20]
    )
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
