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


def test_xml_text_of_each_ascii_character() -> None:
    # ASCII text is translated in one call, not looked up character by character:
    # the same answer for every one of the 128.
    for code in range(128):
        character = chr(code)
        if character in "\n\t":
            expected = character
        elif character == "\r":
            expected = "\n"
        elif code < 32 or code == 127:
            expected = " "
        else:
            expected = character
        assert xml_text(character) == expected, code
        assert xml_text(f"a{character}b") == f"a{expected}b", code


@given(st.text(alphabet=st.characters(max_codepoint=127)), st.text())
def test_xml_text_of_ascii_text_as_of_any_text(ascii_text: str, other: str) -> None:
    # Text with one character beyond ASCII takes the character-by-character path.
    assert xml_text(ascii_text + "é" + other) == xml_text(ascii_text) + "é" + xml_text(other)


def _one_line_as_before(text: object, *, limit: int | None = None) -> str:
    """``one_line`` before plain text without spaces skipped the fold."""
    import unicodedata

    value = text if isinstance(text, str) else str(text)
    plain = value.isascii() and value.isprintable()
    flat = (
        value
        if plain
        else "".join(
            " " if unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"} else c for c in value
        )
    )
    folded = " ".join(flat.split())
    if limit is None or len(folded) <= limit:
        return folded
    return folded[: max(limit - 1, 0)].rstrip() + "…"


@given(
    st.one_of(
        st.text(alphabet=st.sampled_from("ab. \t\n\x0b\x0c\r\x1c\x1f\x7f-_é\u2028")),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)),
        st.text(),
    ),
    st.one_of(st.none(), st.integers(min_value=0, max_value=12)),
)
def test_one_line_as_before(text: str, limit: int | None) -> None:
    assert one_line(text, limit=limit) == _one_line_as_before(text, limit=limit)


def test_one_line_of_plain_text_as_before() -> None:
    for text in ("org.fedoraproject.prod.koji.build.tag", "", " ", "a  b ", " x", "koji", 42):
        for limit in (None, 0, 1, 3, 500):
            assert one_line(text, limit=limit) == _one_line_as_before(text, limit=limit)
