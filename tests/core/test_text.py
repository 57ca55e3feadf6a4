"""The one place that cleans outside text for headers, IRC, XML and logs."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from hypothesis import given
from hypothesis import strategies as st

from fmn_core.text import for_log, has_control, one_line, xml_text


def test_one_line_folds_controls_and_breaks() -> None:
    assert one_line("a\x1b[31mb\r\nForged: yes\x07") == "a [31mb Forged: yes"


def test_one_line_hides_bidi_and_separators() -> None:
    assert one_line("evil\u202egnp.exe\u2028next") == "evil gnp.exe next"


def test_one_line_cuts_with_ellipsis() -> None:
    assert one_line("x" * 50, limit=10) == "x" * 9 + "…"


def test_for_log_escapes_instead_of_hiding() -> None:
    shown = for_log("id\r\n2026-01-01 INFO forged")
    assert "\n" not in shown and "\\r\\n" in shown


def test_has_control_sees_what_one_line_changes() -> None:
    assert has_control("a\x00b") and has_control("\u202e") and not has_control("héllo wörld")


@given(st.text())
def test_xml_text_always_parses(text: str) -> None:
    document = f"<entry>{xml_text(text).replace('&', '&amp;').replace('<', '&lt;')}</entry>"
    ElementTree.fromstring(document)


@given(st.text())
def test_one_line_is_one_clean_line(text: str) -> None:
    assert not has_control(one_line(text))
