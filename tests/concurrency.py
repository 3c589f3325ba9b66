"""Run one call from several threads at once (tests of shared engines and segmenters)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def results_from_threads(call: Callable[[], T], n: int) -> list[T]:
    """``call()`` in ``n`` threads started together; their results (any exception raised
    in a thread is re-raised here)."""
    got: list[T] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            got.append(call())
        except BaseException as exc:  # pragma: no cover - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return got
