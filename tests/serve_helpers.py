"""Helpers of the serving tests: a hard per-test deadline and comparable recommendations."""

from __future__ import annotations

import faulthandler
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def hard_deadline(seconds: float) -> Iterator[None]:
    """Kill the test process with a traceback if the block runs longer than ``seconds``
    (a hung server must never hang CI)."""
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def comparable(rec: Any) -> dict[str, Any]:
    """A Recommendation as a dict without what differs between runs by design: wall-clock
    timings, the creation time, where the engines ran and their host<->device byte counts."""
    d = rec.model_dump(mode="json")
    for key in ("timings_ms", "created_at", "engine"):
        d.pop(key, None)
    for phase in d.get("phases", {}).values():
        phase.pop("segmentation_transfer_bytes", None)
    return dict(d)
