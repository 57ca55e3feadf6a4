"""The rule catalog: registered rule functions, their parameters, and validation.

A rule is a plain function ``f(message, context, **arguments) -> bool`` decorated
with :func:`rule`, which records its title, help text, typed parameters and the
index hint the matcher uses. Catalog modules are found through the ``fmn.rules``
entry-point group, fmn's own built-in catalog included, so a third party adds
rules exactly the way fmn does. A rule is named by its short name (``app_is``)
or as ``module:function``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Literal, Protocol

from .errors import InvalidArgument, UnknownRule
from .messages import MessageFacts

__all__ = [
    "INDEX_KEYS",
    "Catalog",
    "HintFunction",
    "HintOwner",
    "IndexHint",
    "MembershipLookup",
    "OwnershipLookup",
    "Parameter",
    "RuleContext",
    "RuleFunction",
    "RuleSpec",
    "default_catalog",
    "rule",
    "specs_in",
]

log = logging.getLogger(__name__)

#: The message keys the matcher can index filters by (see ``MessageFacts.index_keys``).
INDEX_KEYS = ("app", "topic", "username", "agent", "package", "group")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@:/~-]*$")
MAX_TEXT = 256
#: What a text argument must not contain: control characters and lone surrogates
#: (one regular expression search: a loop over the characters was a tenth of the
#: rules' validation at start-up).
_CONTROL = re.compile("[\x00-\x1f\ud800-\udfff]")
#: Whitespace, as ``str.isspace`` has it (a glob must not contain any).
_SPACE = re.compile(r"\s")
#: ``_CONTROL``'s characters, as a pattern's class.
_BARRED = r"\x00-\x1f\ud800-\udfff"
#: Text that ``Parameter.validate`` accepts unchanged, by kind: nothing to strip
#: (no whitespace first or last), one to ``MAX_TEXT`` characters, no control
#: character nor lone surrogate, and the kind's own form. A value these match is
#: returned as it is; any other goes through the checks that say what is wrong.
_UNCHANGED = {
    "name": re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+@:/~-]{{0,{MAX_TEXT - 1}}}"),
    "text": re.compile(rf"[^\s{_BARRED}](?:[^{_BARRED}]{{0,{MAX_TEXT - 2}}}[^\s{_BARRED}])?"),
    "glob": re.compile(rf"[^\s{_BARRED}]{{1,{MAX_TEXT}}}"),
}


class OwnershipLookup(Protocol):
    """What rules may ask about package ownership (see ``fmn_core.ownership``)."""

    def packages_of(self, owner: str) -> frozenset[str]:
        """Packages owned by a user, or by a group given as ``@group``."""
        ...

    def owners_of(self, package: str) -> frozenset[str]:
        """Owners of a package: usernames and ``@group`` names.

        The inverse of ``packages_of``: ``owner in owners_of(package)`` exactly when
        ``package in packages_of(owner)`` (the matcher finds filters about an
        owner's packages by it).
        """
        ...


class _NoOwnership:
    def packages_of(self, owner: str) -> frozenset[str]:
        return frozenset()

    def owners_of(self, package: str) -> frozenset[str]:
        return frozenset()


class MembershipLookup(Protocol):
    """What rules may ask about Fedora group membership (the account directory)."""

    def groups_of(self, name: str) -> frozenset[str]:
        """The groups an account is a member of."""
        ...


class _NoMembership:
    def groups_of(self, name: str) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule knows besides the message: whose filter it is, who owns what, and
    which groups people are in."""

    owner: str
    ownership: OwnershipLookup = field(default_factory=_NoOwnership)
    membership: MembershipLookup = field(default_factory=_NoMembership)


ParameterKind = Literal["text", "name", "integer", "choice", "glob"]


@dataclass(frozen=True)
class Parameter:
    """One typed, validated argument of a rule."""

    name: str
    help: str
    kind: ParameterKind = "name"
    choices: tuple[str, ...] = ()
    required: bool = True
    default: Any = None

    def validate(self, rule_name: str, value: Any) -> Any:
        """Check and normalize one value; ``InvalidArgument`` says what is wrong."""
        # Every stored rule's arguments are checked at start-up (82,730 distinct ones
        # at 100k users): the messages are only put together for a value refused.
        if self.kind == "integer":
            if isinstance(value, bool):
                raise InvalidArgument(
                    f"{self._where(rule_name)} must be a whole number.", argument=self.name
                )
            if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value.strip()):
                value = int(value.strip())
            if not isinstance(value, int) or not -(10**9) < value < 10**9:
                raise InvalidArgument(
                    f"{self._where(rule_name)} must be a whole number, not {str(value)[:40]!r}.",
                    argument=self.name,
                )
            return value
        if not isinstance(value, str):
            raise InvalidArgument(
                f"{self._where(rule_name)} must be text, not {type(value).__name__}.",
                argument=self.name,
            )
        value = value.strip()
        if not value:
            raise InvalidArgument(
                f"{self._where(rule_name)} must not be empty.", argument=self.name
            )
        if len(value) > MAX_TEXT:
            raise InvalidArgument(
                f"{self._where(rule_name)} is too long ({len(value)} characters; at most "
                f"{MAX_TEXT}).",
                argument=self.name,
            )
        if _CONTROL.search(value):
            raise InvalidArgument(
                f"{self._where(rule_name)} must not contain control characters.",
                argument=self.name,
            )
        if self.kind == "choice":
            folded = {c.upper(): c for c in self.choices}
            if value.upper() not in folded:
                raise InvalidArgument(
                    f"{self._where(rule_name)} must be one of {', '.join(self.choices)}, "
                    f"not {value[:40]!r}.",
                    argument=self.name,
                )
            return folded[value.upper()]
        if self.kind == "name" and not _NAME_RE.match(value):
            hint = (
                f" (leave out the @: {value[1:41]}, not {value[:41]})" if value[:1] == "@" else ""
            )
            raise InvalidArgument(
                f"{self._where(rule_name)} {value[:40]!r} is not a valid name: it starts with a "
                f"letter or a digit, then letters, digits and ._+@:/~- only, no spaces{hint}.",
                argument=self.name,
            )
        # ``\s`` is ``str.isspace``'s whitespace, found without a step per character.
        if self.kind == "glob" and _SPACE.search(value):
            raise InvalidArgument(
                f"{self._where(rule_name)} must not contain spaces.", argument=self.name
            )
        return value

    def _where(self, rule_name: str) -> str:
        return f"{rule_name}: {self.name}"


#: ``(arguments, context) -> index values``; ``None`` means "cannot be indexed".
HintFunction = Callable[[Mapping[str, Any], RuleContext], Iterable[str] | None]
#: ``(arguments, context) -> owner``: whose packages a ``package`` hint's values are.
HintOwner = Callable[[Mapping[str, Any], RuleContext], str]


@dataclass(frozen=True)
class IndexHint:
    """Which message key can satisfy a rule, and the values to look it up by.

    A filter whose rule has this hint can only match messages whose ``key`` holds
    one of ``values(arguments, context)``, so the matcher files it there.
    """

    key: str
    values: HintFunction
    #: Lower is more selective; the matcher indexes a filter by its most selective rule.
    rank: int = 50
    #: For a ``package`` hint whose values are ``ownership.packages_of(owner)``: that
    #: owner (a username, or ``@group``). The matcher then files the filter once,
    #: under the owner, and finds it through ``ownership.owners_of`` of a message's
    #: packages, instead of under each of the owner's packages (dozens for some).
    owner: HintOwner | None = None
    #: The values are the filter's owner's name alone, ``(context.owner,)``, whatever
    #: the arguments (``catalog.hints.owner``, for rules about "me"). The matcher then
    #: files such a filter under that name without calling ``values`` for each user.
    names_owner: bool = False
    #: The rule holds for every message whose ``key`` holds one of the values (the
    #: converse of soundness; ``tests/core/catalog/test_soundness.py`` checks both).
    #: A group of filters found through such a rule's values then skips the rule:
    #: finding it was the check.
    exact: bool = False


RuleFunction = Callable[..., bool]


@dataclass(frozen=True)
class RuleSpec:
    """A registered rule: the function and everything the front ends show about it."""

    name: str
    ref: str
    function: RuleFunction
    title: str
    help: str
    parameters: tuple[Parameter, ...] = ()
    hint: IndexHint | None = None

    def validate(self, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check arguments against the declared parameters; return normalized ones."""
        # Every stored rule's arguments are checked at start-up (82,730 distinct
        # ones at 100k users), nearly all one text argument already as stored:
        # that case is answered by one pattern, the same answer as the checks below.
        if type(arguments) is dict and len(arguments) == 1:
            quick = self._unchanged
            if quick is not None:
                ((name, value),) = arguments.items()
                if name == quick[0] and type(value) is str and quick[1](value):
                    return {quick[0]: value}
        # Front ends and imports hand in whatever they parsed: refuse anything but
        # a mapping of names, as a user error rather than a TypeError.
        if arguments is not None and not isinstance(arguments, Mapping):
            raise InvalidArgument(
                f"{self.name} takes its arguments as name=value pairs (like app=koji), "
                f"not {type(arguments).__name__}.",
                argument="arguments",
            )
        arguments = dict(arguments or {})
        named = [k for k in arguments if not isinstance(k, str)]
        if named:
            raise InvalidArgument(
                f"{self.name}: argument names are words like app, not {str(named[0])[:40]!r}.",
                argument="arguments",
            )
        known = self._names
        if not known.issuperset(arguments):
            unknown = sorted(set(arguments) - known)
            expected = ", ".join(sorted(known)) or "no arguments"
            raise InvalidArgument(
                f"{self.name} does not take {', '.join(map(str, unknown))!s}; it takes {expected}.",
                argument=str(unknown[0]),
            )
        result: dict[str, Any] = {}
        for parameter in self.parameters:
            if parameter.name not in arguments or arguments[parameter.name] in (None, ""):
                if parameter.required:
                    raise InvalidArgument(
                        f"{self.name} needs {parameter.name}= ({parameter.help}).",
                        argument=parameter.name,
                    )
                if parameter.default is not None:
                    result[parameter.name] = parameter.default
                continue
            result[parameter.name] = parameter.validate(self.name, arguments[parameter.name])
        return result

    @functools.cached_property
    def _unchanged(self) -> tuple[str, Callable[[str], re.Match[str] | None]] | None:
        """For a rule of one required text argument: its name, and the pattern of
        the values ``validate`` returns unchanged (``_UNCHANGED``); else ``None``."""
        if len(self.parameters) != 1:
            return None
        (parameter,) = self.parameters
        pattern = _UNCHANGED.get(parameter.kind)
        # A subclass may check more than ``Parameter.validate`` does.
        if pattern is None or not parameter.required or type(parameter) is not Parameter:
            return None
        return parameter.name, pattern.fullmatch

    @functools.cached_property
    def _names(self) -> frozenset[str]:
        """The parameters' names (asked for every stored rule at start-up)."""
        return frozenset(p.name for p in self.parameters)

    def index_values(
        self, arguments: Mapping[str, Any], context: RuleContext
    ) -> frozenset[str] | None:
        """The values this rule is indexed by, or ``None`` when it can't be."""
        if self.hint is None:
            return None
        values = self.hint.values(arguments, context)
        return None if values is None else frozenset(values)

    def describe(self, arguments: Mapping[str, Any], negated: bool = False) -> str:
        """A short human phrase: ``not app_is app=koji``."""
        args = " ".join(f"{k}={v}" for k, v in sorted(arguments.items()))
        return " ".join(part for part in ("not" if negated else "", self.name, args) if part)

    def __call__(
        self, message: MessageFacts, context: RuleContext, arguments: Mapping[str, Any]
    ) -> bool:
        return bool(self.function(message, context, **arguments))


_RULE_ATTR = "__fmn_rule__"


def rule(
    title: str,
    *parameters: Parameter,
    hint: IndexHint | None = None,
    name: str | None = None,
) -> Callable[[RuleFunction], RuleFunction]:
    """Register a function as a rule; its docstring is the help text."""

    def decorate(function: RuleFunction) -> RuleFunction:
        help_text = inspect.cleandoc(function.__doc__ or title)
        spec = RuleSpec(
            name=name or function.__name__,
            ref=f"{function.__module__}:{function.__name__}",
            function=function,
            title=title,
            help=" ".join(help_text.split()),
            parameters=tuple(parameters),
            hint=hint,
        )
        setattr(function, _RULE_ATTR, spec)
        return function

    return decorate


def specs_in(module: ModuleType) -> list[RuleSpec]:
    """The rules a catalog module offers, in the order front ends list them.

    A module (or package) that lists its rules in ``RULES`` offers exactly those, in
    that order, each named ``module:function`` after this module: fmn's built-in
    catalog keeps one file per application family, and its rules stay
    ``fmn_core.catalog:app_is`` whichever file holds them, as databases store them.
    Any other module offers every rule it defines or imports, in source order.
    """
    listed = getattr(module, "RULES", None)
    if listed is None:
        found = [
            getattr(obj, _RULE_ATTR) for obj in vars(module).values() if hasattr(obj, _RULE_ATTR)
        ]
        return sorted(found, key=lambda s: inspect.getsourcelines(s.function)[1])
    specs = []
    for function in listed:
        spec: RuleSpec = getattr(function, _RULE_ATTR)
        specs.append(dataclasses.replace(spec, ref=f"{module.__name__}:{function.__name__}"))
    return specs


class Catalog:
    """All known rules, by short name and by ``module:function``."""

    def __init__(self, specs: Iterable[RuleSpec] = ()) -> None:
        self._by_name: dict[str, RuleSpec] = {}
        self._by_ref: dict[str, RuleSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: RuleSpec) -> None:
        """Register one rule; a short name already taken keeps its first owner."""
        self._by_ref[spec.ref] = spec
        if spec.name in self._by_name and self._by_name[spec.name].ref != spec.ref:
            log.warning(
                "rule name %s is taken by %s; %s is reachable as %s",
                spec.name,
                self._by_name[spec.name].ref,
                spec.ref,
                spec.ref,
            )
            return
        self._by_name[spec.name] = spec

    def add_module(self, module: ModuleType) -> None:
        """Register every rule a module defines."""
        for spec in specs_in(module):
            self.add(spec)

    @classmethod
    def from_entry_points(cls, group: str = "fmn.rules") -> Catalog:
        """Build the catalog from every installed ``fmn.rules`` entry point."""
        catalog = cls()
        loaded = False
        for entry_point in sorted(entry_points(group=group), key=lambda e: e.name != "builtin"):
            try:
                module = entry_point.load()
            except Exception:
                log.exception(
                    "cannot load rule catalog %s (%s)", entry_point.name, entry_point.value
                )
                continue
            catalog.add_module(module)
            loaded = loaded or entry_point.name == "builtin"
        if not loaded:
            # Running from a source tree that was never installed: the built-in
            # catalog is still fmn's own.
            catalog.add_module(importlib.import_module("fmn_core.catalog"))
        return catalog

    def get(self, name: str) -> RuleSpec:
        """Find a rule by short name or ``module:function``; ``UnknownRule`` if none."""
        spec = self._by_name.get(name) or self._by_ref.get(name)
        if spec is None:
            raise UnknownRule(name)
        return spec

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._by_name or name in self._by_ref)

    def __iter__(self) -> Any:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def search(self, words: str | Sequence[str] = "") -> list[RuleSpec]:
        """Rules whose name, title or help contain every word (case-insensitive)."""
        terms = words.split() if isinstance(words, str) else list(words)
        terms = [t.lower() for t in terms]
        return [
            spec
            for spec in self._by_name.values()
            if all(t in f"{spec.name} {spec.title} {spec.help}".lower() for t in terms)
        ]

    def validate(
        self, name: str, arguments: Mapping[str, Any] | None
    ) -> tuple[RuleSpec, dict[str, Any]]:
        """Resolve a rule and validate its arguments in one step."""
        spec = self.get(name)
        return spec, spec.validate(arguments)


_default: Catalog | None = None


def default_catalog() -> Catalog:
    """The process-wide catalog from the installed entry points, built on first use."""
    global _default
    if _default is None:
        _default = Catalog.from_entry_points()
    return _default
