"""Unit and property tests of incoming file-name sanitising (p2pchat.files.filenames)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.files import filenames


@pytest.mark.parametrize(
    ("offered", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("Über Straße.txt", "Über Straße.txt"),
        (".bashrc", "bashrc"),
        ("...", "file"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("LPT1.tar.gz", "_LPT1.tar.gz"),
        ("COMA.txt", "COMA.txt"),
        ("a:b*c?.txt", "a_b_c_.txt"),
        ("trailing. . ", "trailing"),
        ("  spaced  ", "spaced"),
        (". 0", "0"),  # hypothesis found it: no name starting with a space after the dot goes
        ("x.p2pchat-part", "x.p2pchat-part_"),
    ],
)
def test_sanitize_examples(offered: str, safe: str) -> None:
    assert filenames.sanitize(offered) == safe


def test_long_names_keep_their_extension_and_fit() -> None:
    name = "é" * 300 + ".jpeg"
    safe = filenames.sanitize(name)
    assert safe.endswith(".jpeg")
    assert len(safe.encode()) <= filenames.MAX_NAME_BYTES


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=1, max_size=400))
def test_sanitized_names_are_always_safe(name: str) -> None:
    safe = filenames.sanitize(name)
    assert safe and safe not in (".", "..")
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert not safe.startswith(".")
    assert not safe.endswith((" ", "."))
    assert not safe.startswith(" ")
    assert len(safe.encode("utf-8", "surrogatepass")) <= filenames.MAX_NAME_BYTES
    assert safe.split(".")[0].upper() not in ("CON", "NUL", "AUX", "PRN")
    assert not safe.endswith(filenames.PARTIAL_SUFFIX)
    assert filenames.sanitize(safe) == safe  # stable


def test_numbered_and_partial_names() -> None:
    assert filenames.numbered("a.txt", 1) == "a (1).txt"
    assert filenames.numbered("archive", 2) == "archive (2)"
    assert filenames.numbered(".hidden", 3) == ".hidden (3)"
    part = filenames.partial_name("a.txt", "ab" * 16)
    assert part.startswith(".") and part.endswith(filenames.PARTIAL_SUFFIX)
