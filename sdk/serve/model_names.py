"""Triton model names for a bundle's model files (one rule, used by writer and client)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath


def triton_model_name(bundle_rel_path: str) -> str:
    """The Triton model name of a bundle file: its bundle-relative path without ``.onnx``,
    ``/`` as ``__`` and other unsafe characters as ``_``.

    ``segmentation/fold_0.onnx`` -> ``segmentation__fold_0``; unique because bundle paths are.
    """
    p = PurePosixPath(bundle_rel_path)
    parts = [*p.parent.parts, p.stem if p.suffix == ".onnx" else p.name]
    return "__".join(re.sub(r"[^A-Za-z0-9_-]", "_", part) for part in parts if part != ".")
