"""Read nnU-Net's ``postprocessing.json`` / ``postprocessing.pkl`` into :class:`Postprocessing`.

Build time only. ``nnUNetv2_find_best_configuration`` writes both files next to the
cross-validation (or ensemble) predictions: the pickle holds ``(pp_fns, pp_fn_kwargs)`` (the
function objects and their keyword arguments), the JSON the function names and the same
arguments. The JSON is read with :mod:`json`; the pickle only with a restricted unpickler
that resolves nothing but nnU-Net's one postprocessing function (to a name, without
importing it) and numpy scalars, so a crafted pickle cannot run code. The runtime never
reads either file: the result is stored as data in the segmentation spec.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
from pathlib import Path
from typing import Any

from hccatom.errors import ExportError
from hccatom.segmentation.postprocessing import (
    NNUNET_FUNCTION,
    KeepLargestComponent,
    Postprocessing,
)

_PP_MODULE = "nnunetv2.postprocessing.remove_connected_components"
_NUMPY_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _FunctionName(str):
    """Stands in for nnU-Net's postprocessing function inside the restricted unpickler."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == _PP_MODULE and name == NNUNET_FUNCTION:
            return _FunctionName(name)
        if (module, name) in _NUMPY_SCALAR or (module, name) == ("numpy", "dtype"):
            return getattr(importlib.import_module(module), name)  # numpy scalars only
        raise ExportError(
            f"postprocessing.pkl refers to {module}.{name}; only nnU-Net's {NNUNET_FUNCTION} "
            "is allowed. Use the postprocessing.json written next to it instead."
        )


def _flatten(value: Any, where: str) -> list[int]:
    """``labels_or_regions``: an int, a tuple (region) or a list of ints / tuples -> labels."""
    if isinstance(value, bool):
        raise ExportError(f"{where}: labels_or_regions is a boolean")
    if isinstance(value, (list, tuple)):
        out: list[int] = []
        for v in value:
            out.extend(_flatten(v, where))
        return out
    try:
        as_int = int(value)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{where}: labels_or_regions holds {value!r}, not labels") from exc
    if as_int != value:
        raise ExportError(f"{where}: labels_or_regions holds {value!r}, not an integer label")
    return [as_int]


def _steps(names: list[Any], kwargs: list[Any], where: str) -> Postprocessing:
    if len(names) != len(kwargs):
        raise ExportError(f"{where}: {len(names)} functions but {len(kwargs)} argument sets")
    steps: list[KeepLargestComponent] = []
    for i, (fn, kw) in enumerate(zip(names, kwargs, strict=True)):
        if str(fn) != NNUNET_FUNCTION:
            raise ExportError(
                f"{where}: step {i} is {fn!r}; hccatom applies nnU-Net's {NNUNET_FUNCTION} only"
            )
        if not isinstance(kw, dict) or "labels_or_regions" not in kw:
            raise ExportError(f"{where}: step {i} has no labels_or_regions argument")
        unknown = set(kw) - {"labels_or_regions", "background_label"}
        if unknown or int(kw.get("background_label", 0)) != 0:
            raise ExportError(
                f"{where}: step {i} has arguments {sorted(kw)}; only labels_or_regions (and "
                "background_label 0) are supported"
            )
        steps.append(KeepLargestComponent(labels=_flatten(kw["labels_or_regions"], where)))
    return Postprocessing(steps=steps, source=Path(where).name)


def read_postprocessing(path: str | Path) -> Postprocessing:
    """Read ``postprocessing.json`` (preferred) or ``postprocessing.pkl`` (restricted)."""
    p = Path(path)
    if not p.is_file():
        raise ExportError(
            f"no postprocessing file at {p}; give the postprocessing.json (or .pkl) that "
            "nnUNetv2_find_best_configuration wrote"
        )
    if p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ExportError(f"cannot read {p}: {exc}") from exc
        if not isinstance(data, dict) or "postprocessing_fns" not in data:
            raise ExportError(f"{p} has no 'postprocessing_fns'; is it nnU-Net's file?")
        return _steps(list(data["postprocessing_fns"]),
                      list(data.get("postprocessing_kwargs", [])), str(p))
    if p.suffix == ".pkl":
        try:
            loaded = _RestrictedUnpickler(io.BytesIO(p.read_bytes())).load()
        except ExportError:
            raise
        except Exception as exc:  # any malformed pickle
            raise ExportError(f"cannot read {p} as nnU-Net's postprocessing pickle: {exc}") from exc
        if not (isinstance(loaded, (tuple, list)) and len(loaded) == 2):
            raise ExportError(f"{p} does not hold (functions, arguments)")
        return _steps(list(loaded[0]), list(loaded[1]), str(p))
    raise ExportError(f"{p}: expected postprocessing.json or postprocessing.pkl")


__all__ = ["read_postprocessing"]
