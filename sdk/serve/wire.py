"""What ``hccatom serve`` and :class:`hccatom.client.RemotePredictor` exchange.

One Triton model, :data:`MODEL_NAME`, with inputs

- ``request``: BYTES ``[1]``, a JSON object ``{"clinical": {20 fields}, "arterial": {...},
  "portal": {...}}`` where each phase holds ``spacing_zyx_mm``, ``origin``, ``direction``
  (3x3) and ``notes``; or ``{"clinical": ..., "study_path": "..."}`` for a DICOM study on a
  filesystem the server shares (only under the server's ``--study-root``);
- ``arterial``, ``portal``: FP32 ``[z, y, x]`` in HU (optional with ``study_path``),

and one output, ``recommendation``: BYTES ``[1]``, the Recommendation JSON. Each request
carries a leading batch axis of 1 (the dynamic batcher's queue bounds the waiting requests).

Errors cross as Triton error responses whose text contains :data:`ERROR_TAG` followed by a
base64 JSON ``{"type", "message", "problems"}``; the client raises the same
:class:`~hccatom.errors.HccatomError` subclass with the same message.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import numpy as np

from hccatom import errors as core_errors
from hccatom.errors import ClinicalInputError, CTInputError, HccatomError, InputError
from hccatom.safe_json import JSONLimitError, JSONLimits, loads_limited
from hccatom.serve import errors as serve_errors
from hccatom.volume import Volume

MODEL_NAME = "hccatom_recommend"
REQUEST = "request"
OUTPUT = "recommendation"
ERROR_TAG = "HCCATOM-ERROR:"
REQUEST_JSON_LIMITS = JSONLimits(max_bytes=1 << 20, max_depth=12, max_number_chars=40)
"""The request JSON is a few kB: clinical values and two phase geometries."""

_ERROR_RE = re.compile(re.escape(ERROR_TAG) + r"([A-Za-z0-9+/=]+)")


def phase_header(volume: Volume) -> dict[str, Any]:
    """The JSON part of one phase (its array travels as a tensor)."""
    return {"spacing_zyx_mm": list(volume.spacing), "origin": list(volume.origin),
            "direction": [list(r) for r in volume.direction], "notes": list(volume.notes)}


def phase_volume(name: str, header: Any, array: np.ndarray | None) -> Volume:
    """Rebuild one phase; a missing or malformed part raises :class:`CTInputError`."""
    if array is None:
        raise CTInputError(f"request: the {name} phase array is missing; send both phases "
                           "or a study_path")
    if not isinstance(header, dict):
        raise CTInputError(f"request: '{name}' must be an object with spacing_zyx_mm, "
                           "origin, direction and notes")
    notes = header.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise CTInputError(f"request: '{name}.notes' must be a list of strings")
    try:
        return Volume.from_array(array, header["spacing_zyx_mm"],
                                 origin=header.get("origin", (0.0, 0.0, 0.0)),
                                 direction=header.get("direction",
                                                      ((1, 0, 0), (0, 1, 0), (0, 0, 1))),
                                 notes=notes)
    except KeyError as exc:
        raise CTInputError(f"request: '{name}.{exc.args[0]}' is missing") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, HccatomError):
            raise
        raise CTInputError(f"request: '{name}' geometry is malformed: {exc}") from None


def parse_request(raw: bytes) -> dict[str, Any]:
    """The request JSON, size/depth limited; must be an object with ``clinical``."""
    if len(raw) > REQUEST_JSON_LIMITS.max_bytes:
        raise serve_errors.RequestTooLargeError(
            f"request JSON of {len(raw)} bytes is over the limit of "
            f"{REQUEST_JSON_LIMITS.max_bytes}; it holds only clinical values and geometry")
    try:
        data = loads_limited(raw, REQUEST_JSON_LIMITS)
    except (JSONLimitError, ValueError) as exc:
        raise InputError(f"request JSON refused: {exc}") from None
    if not isinstance(data, dict):
        raise InputError("request JSON must be an object with 'clinical' and the phase "
                         "geometries")
    if "clinical" not in data:
        raise ClinicalInputError("request JSON has no 'clinical' object")
    return data


def encode_error(exc: HccatomError) -> str:
    """The text of a Triton error response carrying ``exc`` (type, message, problems)."""
    payload = {"type": type(exc).__name__, "message": str(exc),
               "problems": [list(p) for p in getattr(exc, "problems", None) or []],
               "phase": exc.phase}
    token = base64.b64encode(json.dumps(payload).encode()).decode()
    return f"{ERROR_TAG}{token} {type(exc).__name__}: {exc}"


def _error_class(name: str) -> type[HccatomError]:
    for module in (core_errors, serve_errors):
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, HccatomError):
            return cls
    return HccatomError


def decode_error(text: str) -> HccatomError | None:
    """The typed error an error response carries, or None when it carries none."""
    match = _ERROR_RE.search(text)
    if match is None:
        return None
    try:
        payload = loads_limited(base64.b64decode(match.group(1)), REQUEST_JSON_LIMITS)
        cls = _error_class(str(payload["type"]))
        message = str(payload["message"])
    except (ValueError, KeyError, TypeError):
        return None
    exc: HccatomError
    if issubclass(cls, ClinicalInputError):
        exc = cls(message, [(str(a), str(b)) for a, b in payload.get("problems") or []])
    else:
        try:
            exc = cls(message)
        except TypeError:
            exc = HccatomError(message)
    exc.phase = payload.get("phase")
    return exc
