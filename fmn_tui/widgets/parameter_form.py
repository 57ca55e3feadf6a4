"""A form for one rule's parameters, generated from the rule's ``Parameter`` list."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Button, Checkbox, Input, Label, Static

from fmn_core.rules import RuleSpec

from .validators import ParameterValidator

__all__ = ["ParameterForm", "negate_label"]


def negate_label(negated: bool) -> str:
    """The negate box's label says its state in words: the box's mark is only a colour."""
    if negated:
        return "Negate: ON, notify when this rule does NOT hold"
    return "Negate: off, notify when this rule holds"


class ParameterForm(Vertical):
    """One input per parameter, each checked as it is typed; a "negate" box; Add."""

    class Submitted(Message):
        """Every field passed its check; the values as typed (empty ones left out)."""

        def __init__(self, arguments: dict[str, str], negated: bool) -> None:
            super().__init__()
            self.arguments = arguments
            self.negated = negated

    class Cancelled(Message):
        """The user gave up on this rule."""

    def __init__(self, spec: RuleSpec, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.spec = spec

    def compose(self) -> ComposeResult:
        for parameter in self.spec.parameters:
            optional = "" if parameter.required else " (optional)"
            yield Label(f"{parameter.name}{optional}: {parameter.help}", markup=False)
            yield Input(
                "" if parameter.default is None else str(parameter.default),
                placeholder=" / ".join(parameter.choices) if parameter.choices else parameter.kind,
                validators=[ParameterValidator(self.spec, parameter)],
                validate_on=["changed", "submitted"],
                valid_empty=not parameter.required,
                suggester=(
                    SuggestFromList(parameter.choices, case_sensitive=False)
                    if parameter.choices
                    else None
                ),
                id=f"param-{parameter.name}",
            )
            yield Static("", id=f"error-{parameter.name}", classes="error", markup=False)
        yield Checkbox(negate_label(False), id="negate")
        with Horizontal(classes="buttons"):
            yield Button("Add rule", variant="primary", id="add")
            yield Button("Cancel", id="cancel")

    def show_error(self, parameter: str, message: str) -> None:
        """Show why a parameter was refused, under its input."""
        errors = self.query(f"#error-{parameter}")
        if errors:
            errors.first(Static).update(f"✗ {message}" if message else "")
            self.query_one(f"#param-{parameter}", Input).focus()
        else:
            self.app.notify(message, severity="error", markup=False)

    @on(Checkbox.Changed, "#negate")
    def _negate_changed(self, event: Checkbox.Changed) -> None:
        event.checkbox.label = negate_label(event.value)

    @on(Input.Changed)
    def _check(self, event: Input.Changed) -> None:
        name = (event.input.id or "").removeprefix("param-")
        result = event.validation_result
        problem = result.failure_descriptions[0] if result and not result.is_valid else ""
        # Don't shout at an empty field the user hasn't reached yet.
        self.show_error_quietly(name, problem if event.value else "")

    def show_error_quietly(self, parameter: str, message: str) -> None:
        """Update a parameter's error line without moving the focus."""
        for error in self.query(f"#error-{parameter}").results(Static):
            error.update(f"✗ {message}" if message else "")

    @on(Input.Submitted)
    @on(Button.Pressed, "#add")
    def submit(self) -> None:
        """Check every field; post ``Submitted`` if all pass, else show the first problem."""
        arguments: dict[str, str] = {}
        first_bad: Input | None = None
        for parameter in self.spec.parameters:
            field = self.query_one(f"#param-{parameter.name}", Input)
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                self.show_error_quietly(parameter.name, result.failure_descriptions[0])
                first_bad = first_bad or field
            elif field.value.strip():
                arguments[parameter.name] = field.value.strip()
        if first_bad is not None:
            first_bad.focus()
            return
        negated = self.query_one("#negate", Checkbox).value
        self.post_message(self.Submitted(arguments, negated))

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.post_message(self.Cancelled())
