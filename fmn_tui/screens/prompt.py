"""Asking for one line of text (a filter's name), checked as it is typed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Validator
from textual.widgets import Button, Footer, Input, Label, Static

from ._base import HoldsEdits

__all__ = ["PromptScreen"]


class PromptScreen(HoldsEdits, ModalScreen[str | None]):
    """One input in a dialog; dismissed with the text, or ``None`` when cancelled."""

    CSS_PATH = "prompt.tcss"
    AUTO_FOCUS = "Input"
    EDIT_FIELDS = "#answer"
    DISCARD_QUESTION = "Discard what you typed?"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", key_display="Esc"),
    ]

    def __init__(
        self,
        title: str,
        *,
        value: str = "",
        placeholder: str = "",
        validators: Iterable[Validator] = (),
        ok: str = "OK",
    ) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.validators = list(validators)
        self.ok = ok

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="title", markup=False)
            yield Input(
                self.value,
                placeholder=self.placeholder,
                validators=self.validators,
                validate_on=["changed", "submitted"],
                id="answer",
            )
            yield Static("", id="error", classes="error", markup=False)
            with Horizontal(id="buttons"):
                yield Button(self.ok, variant="primary", id="ok")
                yield Button("Cancel", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        """The value the dialog opened with is not the user's typing."""
        self.mark_saved()

    @on(Input.Changed, "#answer")
    def _changed(self, event: Input.Changed) -> None:
        result = event.validation_result
        problems = [] if result is None else result.failure_descriptions
        shown = f"✗ {problems[0]}" if problems and event.value else ""
        self.query_one("#error", Static).update(shown)

    @on(Input.Submitted, "#answer")
    @on(Button.Pressed, "#ok")
    def _submit(self) -> None:
        field = self.query_one("#answer", Input)
        result = field.validate(field.value)
        if result is not None and not result.is_valid:
            self.query_one("#error", Static).update(f"✗ {result.failure_descriptions[0]}")
            field.focus()
            return
        self.dismiss(field.value.strip())

    def action_cancel(self) -> None:
        """Close without an answer; asks first when you typed something."""
        self.leave(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
