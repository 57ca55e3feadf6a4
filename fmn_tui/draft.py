"""A filter being edited: the preference calls the user asked for, not yet saved.

The TUI keeps no copy of the preference logic. A draft is the list of
``fmn_core.preferences`` calls the user made on one filter; showing it, previewing
it and saving it all replay those calls, in a transaction that is rolled back
(show, preview) or committed (save). Core validates every step each time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from fmn_core import preferences
from fmn_core.preferences import FilterView, PreviewHit

from .account import Account

__all__ = ["FilterDraft", "Step"]


@dataclass(frozen=True, eq=False)
class Step:
    """One pending preference call (compared by identity)."""

    #: What the step does, in the user's words ("add app_is app=koji").
    description: str
    apply: Callable[[Session, Account], object]


class FilterDraft:
    """The unsaved changes to one filter of one context."""

    def __init__(self, context: str, name: str, *, new: bool = False) -> None:
        self.context = context
        self.name = name
        self.steps: list[Step] = []
        self._creates = new
        if new:
            self.steps.append(
                Step(
                    f"create filter {name}",
                    lambda session, account: account.call(
                        session, preferences.add_filter, context, name
                    ),
                )
            )

    @property
    def dirty(self) -> bool:
        """Whether there is anything to save."""
        return bool(self.steps)

    @property
    def is_new(self) -> bool:
        """Whether the filter itself does not exist until the draft is saved."""
        return self._creates

    def add_rule(self, rule: str, arguments: Mapping[str, Any], negated: bool) -> Step:
        """Queue adding a rule to the filter."""
        context, name, args = self.context, self.name, dict(arguments)
        words = " ".join(f"{k}={v}" for k, v in sorted(args.items()))
        step = Step(
            f"add {'not ' if negated else ''}{rule} {words}".strip(),
            lambda session, account: account.call(
                session, preferences.add_rule, context, name, rule, args, negated=negated
            ),
        )
        self.steps.append(step)
        return step

    def set_negated(self, number: int, negated: bool) -> Step:
        """Queue negating (or un-negating) rule ``number`` (1-based)."""
        context, name = self.context, self.name
        step = Step(
            f"{'negate' if negated else 'un-negate'} rule {number}",
            lambda session, account: account.call(
                session, preferences.set_rule_negated, context, name, number, negated
            ),
        )
        self.steps.append(step)
        return step

    def remove_rule(self, number: int) -> Step:
        """Queue removing rule ``number`` (1-based)."""
        context, name = self.context, self.name
        step = Step(
            f"remove rule {number}",
            lambda session, account: account.call(
                session, preferences.remove_rule, context, name, number
            ),
        )
        self.steps.append(step)
        return step

    def undo(self) -> Step | None:
        """Forget the last step (never the filter's creation); the step, if any."""
        if len(self.steps) <= (1 if self._creates else 0):
            return None
        return self.steps.pop()

    def discard(self, step: Step) -> None:
        """Drop a step core refused."""
        if step in self.steps:
            self.steps.remove(step)

    def replay(self, session: Session, account: Account) -> FilterView:
        """Apply every step in ``session``; the filter as it would be saved."""
        for step in self.steps:
            step.apply(session, account)
        return account.call(session, preferences.get_filter, self.context, self.name)

    def preview(self, session: Session, account: Account, limit: int = 200) -> list[PreviewHit]:
        """Apply every step in ``session``; what the filter would have matched lately."""
        for step in self.steps:
            step.apply(session, account)
        return account.call(session, preferences.preview, self.context, self.name, limit=limit)

    def saved(self, steps: tuple[Step, ...]) -> None:
        """These steps are committed; any made since stay pending."""
        self.steps = [step for step in self.steps if step not in steps]
        self._creates = False
