"""The preference service: the one write path for everything a user can change.

This module is the facade the front ends import (the TUI, the IRC bot, the
preference gateway's allow-list names its functions). Every function takes
``(session, actor, ...)``, validates its input, checks that the actor may act on
the target account, writes, and records a ``ChangeEvent`` so every process's
matcher refreshes that user. The TUI and the IRC bot call these functions and
nothing else, so both accept the same input and say the same words when they
refuse it.

Where each part lives:

- :mod:`fmn_core.access`: the actor, the ownership check, the offered contexts;
- :mod:`fmn_core.views`: the frozen views handed to front ends;
- :mod:`fmn_core.store`: the rows (users, preferences, ordered filters and rules,
  change events), for core modules;
- :mod:`fmn_core.editing`: contexts, filters, rules, templates, muting;
- :mod:`fmn_core.confirmation`: destinations and their confirmation codes;
- :mod:`fmn_core.history`: previews (by the matcher itself) and recent notifications;
- :mod:`fmn_core.explain`: why a message was (or was not) sent, by the matcher itself;
- :mod:`fmn_core.actions`: acting from a notification (mute, pause; signed links).

Rules of the house, enforced there:

- Only admins may pass ``user=`` for another account; everyone else gets
  ``PermissionDenied``. Destinations and confirmations are only ever looked up
  inside the target user's own preferences, so no id reaches someone else's row.
- Input is validated before anything is written: a call that raises has written
  nothing. A call that records something and then refuses (a wrong confirmation
  code) returns an outcome instead (:class:`ConfirmResult`).
- Results are frozen dataclasses copied from the rows, safe after the session
  has closed. Core never commits, rolls back or closes the session.
"""

from __future__ import annotations

from .access import Actor
from .actions import ActionPlan, act_on_notification, plan_action, revoke_action_links
from .confirmation import (
    MAX_DESTINATIONS_PER_CONTEXT,
    MAX_PENDING_PER_CONTEXT,
    ConfirmOutcome,
    ConfirmResult,
    confirm,
    mark_code_sent,
    pending_confirmation_codes,
    profile_addresses,
    remove_destination,
    resend_confirmation,
    set_destination,
)
from .defaults import first_contact
from .delivery_settings import (
    pending_notifications,
    set_daily_digest,
    set_filter_delivery,
    set_filter_urgent,
    set_quiet_hours,
)
from .editing import (
    add_filter,
    add_rule,
    get_context,
    get_filter,
    list_contexts,
    list_filters,
    list_templates,
    move_filter,
    mute,
    pause_filter,
    remove_filter,
    remove_rule,
    rename_filter,
    set_context_enabled,
    set_digest,
    set_filter_active,
    set_filter_oneshot,
    set_rule_negated,
    unmute,
    use_template,
)
from .expiry import take_notices
from .explain import explain
from .history import preview, recent_notifications
from .templates import TemplateView
from .views import (
    ContextView,
    DestinationView,
    FilterView,
    NotificationView,
    OutgoingCode,
    PendingConfirmation,
    PreviewHit,
    RuleView,
)
from .waiting import Waiting

__all__ = [
    "MAX_DESTINATIONS_PER_CONTEXT",
    "MAX_PENDING_PER_CONTEXT",
    "ActionPlan",
    "Actor",
    "ConfirmOutcome",
    "ConfirmResult",
    "ContextView",
    "DestinationView",
    "FilterView",
    "NotificationView",
    "OutgoingCode",
    "PendingConfirmation",
    "PreviewHit",
    "RuleView",
    "TemplateView",
    "Waiting",
    "act_on_notification",
    "add_filter",
    "add_rule",
    "confirm",
    "explain",
    "first_contact",
    "get_context",
    "get_filter",
    "list_contexts",
    "list_filters",
    "list_templates",
    "mark_code_sent",
    "move_filter",
    "mute",
    "pause_filter",
    "pending_confirmation_codes",
    "pending_notifications",
    "plan_action",
    "preview",
    "profile_addresses",
    "recent_notifications",
    "remove_destination",
    "remove_filter",
    "remove_rule",
    "rename_filter",
    "resend_confirmation",
    "revoke_action_links",
    "set_context_enabled",
    "set_daily_digest",
    "set_destination",
    "set_digest",
    "set_filter_active",
    "set_filter_delivery",
    "set_filter_oneshot",
    "set_filter_urgent",
    "set_quiet_hours",
    "set_rule_negated",
    "take_notices",
    "unmute",
    "use_template",
]
