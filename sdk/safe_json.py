"""Parse untrusted JSON (clinical files, bundle manifests) within fixed limits.

Python's :func:`json.loads` has no limits: a 5000-digit integer raises ``ValueError``
(the interpreter's integer-digit limit), one of 400 digits overflows later when formatted as
a float, 100,000 nested brackets raise ``RecursionError`` and a multi-gigabyte file is read
whole. :func:`loads_limited` checks, before and while parsing:

* size (``max_bytes``) - the caller reads at most that many bytes (:func:`read_limited`);
* nesting depth (``max_depth``) - measured on the text with strings blanked, before parsing;
* number length (``max_number_chars``) - via the parser's number hooks, before conversion;
* ``NaN`` / ``Infinity`` literals - refused (they are not JSON).

Every failure raises :class:`JSONLimitError` (a ``ValueError``) with a short message that
never echoes the input; callers turn it into the typed error of their input
(``ClinicalInputError``, ``BundleFormatError``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.path_checks import read_regular_file

__all__ = ["JSONLimitError", "JSONLimits", "load_limited", "loads_limited", "read_limited"]

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class JSONLimitError(ValueError):
    """JSON text that is malformed or outside the limits; the message echoes no content."""


class JSONLimits:
    """Limits for one kind of JSON input (immutable values, documented defaults)."""

    __slots__ = ("max_bytes", "max_depth", "max_number_chars")

    def __init__(
        self, max_bytes: int = 1 << 20, max_depth: int = 32, max_number_chars: int = 40
    ) -> None:
        self.max_bytes = int(max_bytes)
        self.max_depth = int(max_depth)
        self.max_number_chars = int(max_number_chars)


def read_limited(path: str | Path, limits: JSONLimits, *, what: str = "the file",
                 error: type[Exception] = JSONLimitError) -> bytes:
    """The bytes of ``path``, refusing a file larger than ``limits.max_bytes`` unread.

    Read through :func:`hccatom.path_checks.read_regular_file`: the open descriptor itself
    is checked, so a FIFO or device (even one swapped in after an earlier ``stat``) raises
    ``error`` (default :class:`JSONLimitError`; a caller passes its own typed error and
    ``what`` names the input) instead of blocking."""
    return read_regular_file(path, what, error=error, max_bytes=limits.max_bytes)


def _depth(raw: bytes) -> int:
    """Deepest bracket nesting of JSON text, strings excluded (no parsing, linear time)."""
    stripped = _STRING.sub(b'""', raw)
    codes = np.frombuffer(stripped, dtype=np.uint8)
    if codes.size == 0:
        return 0
    step = (
        (codes == ord("[")).astype(np.int32) + (codes == ord("{"))
        - (codes == ord("]")) - (codes == ord("}"))
    )
    return int(np.cumsum(step).max(initial=0))


def loads_limited(text: bytes | str, limits: JSONLimits) -> Any:
    """Parse JSON ``text`` within ``limits``; raises :class:`JSONLimitError` on any problem."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(raw) > limits.max_bytes:
        raise JSONLimitError(
            f"{len(raw):,} bytes is more than the {limits.max_bytes:,} allowed for this input"
        )
    depth = _depth(raw)
    if depth > limits.max_depth:
        raise JSONLimitError(
            f"nested {depth} levels deep; at most {limits.max_depth} levels are allowed"
        )

    def number(kind: type[int] | type[float]) -> Any:
        def parse(s: str) -> int | float:
            if len(s) > limits.max_number_chars:
                raise JSONLimitError(
                    f"a number is written with {len(s)} characters; at most "
                    f"{limits.max_number_chars} are allowed (no real value needs more)"
                )
            value = kind(s)
            if isinstance(value, float) and not math.isfinite(value):
                raise JSONLimitError("a number overflows to infinity; write a finite number")
            return value

        return parse

    def constant(name: str) -> Any:
        raise JSONLimitError(f"{name} is not a JSON number; write a finite number")

    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONLimitError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(
            decoded, parse_int=number(int), parse_float=number(float), parse_constant=constant
        )
    except JSONLimitError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONLimitError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except (ValueError, RecursionError, OverflowError) as exc:  # defensive: limits above
        raise JSONLimitError(f"not valid JSON ({type(exc).__name__})") from None


def load_limited(path: str | Path, limits: JSONLimits, *, what: str = "the file",
                 error: type[Exception] = JSONLimitError) -> Any:
    """Parse the JSON file at ``path`` within ``limits``: a file over ``max_bytes`` is refused
    unread, a FIFO or device raises ``error`` (:func:`read_limited`). Raises
    :class:`JSONLimitError`, or ``OSError`` when the file cannot be opened."""
    return loads_limited(read_limited(path, limits, what=what, error=error), limits)
