"""Validators that give early feedback by calling core's own checks.

None of them holds a rule of its own: each one calls the function core calls when
the change is made (rule parameters, filter names, destinations), and shows the
sentence core wrote. Core checks everything again when the change is saved.
"""

from __future__ import annotations

from textual.validation import ValidationResult, Validator

from fmn_core.config import PushConfig
from fmn_core.destinations import check_destination
from fmn_core.errors import InvalidArgument
from fmn_core.filters import check_filter_name
from fmn_core.rules import Parameter, RuleSpec
from fmn_core.schedule import check_timezone

__all__ = ["DestinationValidator", "FilterNameValidator", "ParameterValidator", "TimezoneValidator"]


class ParameterValidator(Validator):
    """One parameter of a rule, checked by ``Parameter.validate``."""

    def __init__(self, spec: RuleSpec, parameter: Parameter) -> None:
        super().__init__()
        self.spec = spec
        self.parameter = parameter

    def validate(self, value: str) -> ValidationResult:
        """Accept what core accepts; an empty optional parameter is fine."""
        if not value.strip() and not self.parameter.required:
            return self.success()
        if not value.strip():
            return self.failure(f"{self.parameter.name} is required: {self.parameter.help}.")
        try:
            self.parameter.validate(self.spec.name, value)
        except InvalidArgument as error:
            return self.failure(str(error))
        return self.success()


class TimezoneValidator(Validator):
    """An IANA time zone name, checked by core's ``check_timezone``; the refusal names
    the field (``what``), as there may be more than one zone on a screen."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def validate(self, value: str) -> ValidationResult:
        """Accept what core accepts."""
        try:
            check_timezone(value.strip(), self.what)
        except InvalidArgument as error:
            message = str(error)
            return self.failure(message[:1].upper() + message[1:])
        return self.success()


class FilterNameValidator(Validator):
    """A filter name, checked by core's ``check_filter_name``."""

    def validate(self, value: str) -> ValidationResult:
        """Accept what core accepts."""
        try:
            check_filter_name(value)
        except InvalidArgument as error:
            return self.failure(str(error))
        return self.success()


class DestinationValidator(Validator):
    """An address for a context, checked by core's ``check_destination``.

    Host names are not resolved while typing; core resolves them when the
    address is set.
    """

    def __init__(self, context: str, push: PushConfig) -> None:
        super().__init__()
        self.context = context
        self.push = push

    def validate(self, value: str) -> ValidationResult:
        """Accept what core accepts (without DNS)."""
        try:
            check_destination(self.context, value, self.push, resolve=False)
        except InvalidArgument as error:
            return self.failure(str(error))
        return self.success()
