"""Text from the streams made safe for a terminal: control characters shown, never obeyed.

Log text is written by whoever can log, so a body can carry ANSI/OSC sequences (clear the
screen, OSC 8 hyperlinks, OSC 52 clipboard writes), carriage returns and newlines that fake
lines, or bidi overrides that reorder what the operator reads. Human output shows each such
character as a visible escape (`\\x1b`, `\\r`, `\\u202e`); `--json` keeps the exact text
(`json_safe` only changes how JSON spells it). On a terminal that is not UTF-8 (latin-1, EUC-JP,
`PYTHONIOENCODING=ascii`) what its encoding cannot take is an escape too, made before a table
measures its cells, and tracestream's own symbols are ASCII stand-ins.
"""

from __future__ import annotations

import re

__all__ = ["encodable", "json_safe", "visible"]

_BIDI_AND_LINE_BREAKS = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
# C0, DEL and C1 controls, lone surrogates (undecodable bytes), bidi controls and the
# Unicode line and paragraph separators.
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_BIDI_AND_LINE_BREAKS}]")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# The same characters as UTF-8 inside JSON text (C0 controls are escaped by JSON itself).
_UNSAFE_UTF8 = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, encoding: str = "utf-8") -> str:
    """`text` with every unsafe character, and every one `encoding` cannot take, replaced by its
    escape; other text is unchanged."""
    escaped = _UNSAFE.sub(_escape, text)
    if encoding == "utf-8" or escaped.isascii():  # takes every character left: no round trip
        return escaped
    return escaped.encode(encoding, "backslashreplace").decode(encoding)


def encodable(text: str, encoding: str) -> bool:
    """`encoding` can take every character of `text`."""
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _json_escape(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode())


def json_safe(line: bytes) -> bytes:
    """A JSON document with DEL, C1, bidi and line-separator characters spelled `\\uXXXX`: it decodes
    to the same value, and no byte in it drives a terminal."""
    return _UNSAFE_UTF8.sub(_json_escape, line)
