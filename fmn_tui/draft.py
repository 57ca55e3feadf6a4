"""A filter being edited: the preference calls the user asked for, not yet saved.

The TUI keeps no copy of the preference logic. A draft is the list of
``fmn_core.preferences`` calls the user made on one filter; showing it, previewing
it and saving it all send those calls to the preference gateway as one request, in a
transaction that is rolled back (show, preview) or committed (save). Core validates
every step each time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fmn_core import preferences
from fmn_core.gateway import PreferenceCall
from fmn_core.preferences import FilterView, PreviewHit

from .account import Account

__all__ = ["FilterEdits", "Step"]


@dataclass(frozen=True, eq=False)
class Step:
    """One pending preference call (compared by identity)."""

    #: What the step does, in the user's words ("add app_is app=koji").
    description: str
    call: PreferenceCall


class FilterEdits:
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
                    PreferenceCall.of(preferences.add_filter, context, name),
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
            PreferenceCall.of(preferences.add_rule, context, name, rule, args, negated=negated),
        )
        self.steps.append(step)
        return step

    def set_negated(self, number: int, negated: bool) -> Step:
        """Queue negating (or un-negating) rule ``number`` (1-based)."""
        context, name = self.context, self.name
        step = Step(
            f"{'negate' if negated else 'un-negate'} rule {number}",
            PreferenceCall.of(preferences.set_rule_negated, context, name, number, negated),
        )
        self.steps.append(step)
        return step

    def remove_rule(self, number: int) -> Step:
        """Queue removing rule ``number`` (1-based)."""
        context, name = self.context, self.name
        step = Step(
            f"remove rule {number}",
            PreferenceCall.of(preferences.remove_rule, context, name, number),
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

    def calls(self, steps: tuple[Step, ...] | None = None) -> list[PreferenceCall]:
        """The preference calls of ``steps`` (default: all of the draft's)."""
        return [step.call for step in (self.steps if steps is None else steps)]

    def replay_calls(self) -> list[PreferenceCall]:
        """Every step, then reading the filter back: the filter as it would be saved."""
        return [*self.calls(), PreferenceCall.of(preferences.get_filter, self.context, self.name)]

    def replay(self, account: Account) -> FilterView:
        """Apply every step in a rolled-back transaction; the filter as it would be saved."""
        view: FilterView = account.run(self.replay_calls(), trial=True)[-1]
        return view

    def preview(self, account: Account, limit: int = 200) -> list[PreviewHit]:
        """Apply every step in a rolled-back transaction; what the filter would have matched."""
        hits: list[PreviewHit] = account.run(
            [
                *self.calls(),
                PreferenceCall.of(preferences.preview, self.context, self.name, limit=limit),
            ],
            trial=True,
        )[-1]
        return hits

    def saved(self, steps: tuple[Step, ...]) -> None:
        """These steps are committed; any made since stay pending."""
        self.steps = [step for step in self.steps if step not in steps]
        self._creates = False
