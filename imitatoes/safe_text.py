"""Text from servers and critics, made safe to print: a critic's reason may hold escape
sequences that retitle or clear the user's terminal, and square brackets that rich would read
as markup. Everything that came from outside passes through `printable` before it is shown."""

from __future__ import annotations

import re

# ESC sequences (CSI, OSC, and two-byte ones), then any C0/C1 control, DEL, and the Unicode
# controls that reorder or hide text. Newlines and tabs survive unless one_line is asked for.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -~])?"
                      r"|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object, one_line: bool = False) -> str:
    out = _CONTROLS.sub("", _ESCAPES.sub("", str(text)))
    return " ".join(out.split()) if one_line else out


def markup_safe(text: object, one_line: bool = False) -> str:
    """For strings that rich reads as markup (table cells given as plain str)."""
    from rich.markup import escape  # rich loads only where a table is drawn

    return escape(printable(text, one_line))
