"""fmn's built-in rules, registered through the ``fmn.rules`` entry point ``builtin``.

Their names and meanings are a public contract: preference files and the IRC bot
refer to them, and databases store them by short name (``app_is``) or as
``fmn_core.catalog:app_is``, whichever family module holds the rule. Each rule
reads the message through its facts (the schema properties, computed once),
never through raw bodies unless a schema has no property for what the rule needs.

One module per application family holds its rules:

- ``generic``: application, topic, severity, users, packages, groups, artifacts, bots
- ``koji``, ``bodhi``, ``pagure`` (pagure.io and dist-git), ``copr``, ``anitya``,
  ``meetings`` (meetbot, fedocal), ``people`` (FAS groups, badges), ``discourse``,
  ``bugzilla``, ``koschei``

``hints`` holds what index hints share (ranks, topic sets) and ``reading`` the
body access that never raises. ``RULES`` below is the order front ends list the
rules in: the generic rules first, then application by application.

Every rule must stay false, never raise, on a body of any shape, and every index
hint must be sound; ``tests/core/catalog/test_soundness.py`` checks both over the
shared corpus of real bus messages.
"""

from __future__ import annotations

from ..rules import RuleFunction
from .anitya import anitya_new_release, anitya_new_release_for_my_packages
from .bodhi import (
    BODHI_STATUSES,
    bodhi_comment_on_my_update,
    bodhi_negative_karma,
    bodhi_update_for_package,
    bodhi_update_pushed,
    bodhi_update_status,
)
from .bugzilla import bugzilla_bug_on_package
from .copr import copr_build_failed, copr_build_in_my_project, copr_build_in_project
from .discourse import discourse_category
from .generic import (
    BOT_ACCOUNTS,
    app_is,
    container_involved,
    flatpak_involved,
    group_involved,
    module_involved,
    not_from_bot,
    package_involved,
    package_owned_by,
    package_owned_by_group,
    package_owned_by_me,
    pertains_to_me,
    severity_at_least,
    summary_contains,
    topic_contains,
    topic_matches,
    triggered_by,
    triggered_by_me,
    user_involved,
)
from .koji import (
    KOJI_BUILD_STATES,
    koji_build_completed,
    koji_build_failed,
    koji_build_state,
    koji_build_tagged,
    koji_scratch_build,
)
from .koschei import koschei_package_failing
from .meetings import fedocal_meeting, meetbot_meeting_on_channel
from .pagure import (
    distgit_pr_on_my_packages,
    pagure_assigned_to_me,
    pagure_comment_on_my_pr,
    pagure_issue_on_project,
    pagure_pr_on_project,
)
from .people import (
    badge_awarded_to_me,
    fas_group_membership_change,
    member_of_group_involved,
    my_group_membership_changed,
    package_owned_by_my_groups,
)

#: Every built-in rule, in the order front ends list them. A rule added to a family
#: module is offered only once it is listed here (a test checks none is left out).
RULES: tuple[RuleFunction, ...] = (
    # generic: the contract rules
    app_is,
    topic_matches,
    severity_at_least,
    pertains_to_me,
    user_involved,
    triggered_by_me,
    triggered_by,
    package_involved,
    package_owned_by_me,
    package_owned_by,
    package_owned_by_group,
    group_involved,
    summary_contains,
    # koji
    koji_build_completed,
    koji_build_failed,
    koji_build_state,
    koji_scratch_build,
    koji_build_tagged,
    # bodhi
    bodhi_update_for_package,
    bodhi_update_status,
    bodhi_update_pushed,
    bodhi_comment_on_my_update,
    bodhi_negative_karma,
    # pagure and dist-git
    pagure_pr_on_project,
    pagure_issue_on_project,
    pagure_comment_on_my_pr,
    pagure_assigned_to_me,
    distgit_pr_on_my_packages,
    # copr
    copr_build_in_project,
    copr_build_in_my_project,
    copr_build_failed,
    # anitya
    anitya_new_release,
    anitya_new_release_for_my_packages,
    # generic: containers, modules, flatpaks
    container_involved,
    module_involved,
    flatpak_involved,
    # meetings
    meetbot_meeting_on_channel,
    fedocal_meeting,
    # people
    badge_awarded_to_me,
    fas_group_membership_change,
    my_group_membership_changed,
    package_owned_by_my_groups,
    member_of_group_involved,
    # discourse, bugzilla, koschei
    discourse_category,
    bugzilla_bug_on_package,
    koschei_package_failing,
    # generic: bots and topics
    not_from_bot,
    topic_contains,
)

__all__ = [
    "BODHI_STATUSES",
    "BOT_ACCOUNTS",
    "KOJI_BUILD_STATES",
    "RULES",
    "anitya_new_release",
    "anitya_new_release_for_my_packages",
    "app_is",
    "badge_awarded_to_me",
    "bodhi_comment_on_my_update",
    "bodhi_negative_karma",
    "bodhi_update_for_package",
    "bodhi_update_pushed",
    "bodhi_update_status",
    "bugzilla_bug_on_package",
    "container_involved",
    "copr_build_failed",
    "copr_build_in_my_project",
    "copr_build_in_project",
    "discourse_category",
    "distgit_pr_on_my_packages",
    "fas_group_membership_change",
    "fedocal_meeting",
    "flatpak_involved",
    "group_involved",
    "koji_build_completed",
    "koji_build_failed",
    "koji_build_state",
    "koji_build_tagged",
    "koji_scratch_build",
    "koschei_package_failing",
    "meetbot_meeting_on_channel",
    "member_of_group_involved",
    "module_involved",
    "my_group_membership_changed",
    "not_from_bot",
    "package_involved",
    "package_owned_by",
    "package_owned_by_group",
    "package_owned_by_me",
    "package_owned_by_my_groups",
    "pagure_assigned_to_me",
    "pagure_comment_on_my_pr",
    "pagure_issue_on_project",
    "pagure_pr_on_project",
    "pertains_to_me",
    "severity_at_least",
    "summary_contains",
    "topic_contains",
    "topic_matches",
    "triggered_by",
    "triggered_by_me",
    "user_involved",
]
