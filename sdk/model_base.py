"""The two pydantic bases of hccatom's typed records; every record derives from one of them.

``FrozenModel`` is for what hccatom writes and reads back itself (results, explanations,
the segmentation spec): an unknown field there is a mistake, so it is refused.
``ManifestModel`` is for the bundle manifest and its parts: a newer minor schema may add
optional fields, so an older reader skips fields it does not know.
Both are immutable, so a result or a loaded bundle can be shared between threads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict


class FrozenModel(BaseModel):
    """Immutable; unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ManifestModel(BaseModel):
    """Immutable; unknown fields (from a newer minor manifest schema) are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


def without_absent(data: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``data`` (a serialised record) without those ``keys`` whose value is None.

    For optional fields added by a later minor schema: left out when unset, a record
    serialises exactly as before, so older readers (and signatures) still accept it.
    """
    for key in keys:
        if data.get(key) is None:
            data.pop(key, None)
    return data
