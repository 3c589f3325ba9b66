"""``Predictor.from_bundle(B, engines="triton://host:8001")``: the bundle's networks on a
Triton server, everything else in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hccatom.bundle import Bundle
from hccatom.engines import Engine
from hccatom.engines.triton_engine import TritonEngine, parse_triton_url
from hccatom.errors import BundleError
from hccatom.serve.model_names import triton_model_name


def remote_engine_factory(url: str, bundle: Bundle, *, timeout_s: float = 120.0
                          ) -> Callable[[Path], Engine]:
    """An ``engine_factory`` that opens each bundle model file as a :class:`TritonEngine`
    named as ``hccatom export triton`` names it, checked against the file's sha256."""
    parse_triton_url(url)  # a bad address fails before any engine is made
    sha = {f.path: f.sha256 for f in bundle.manifest.files}
    root = bundle.root.resolve()

    def make(path: Path) -> Engine:
        try:
            rel = path.resolve().relative_to(root).as_posix()
        except ValueError as exc:
            raise BundleError(f"{path} is not inside the bundle {root}") from exc
        return TritonEngine(url, triton_model_name(rel), expected_sha256=sha.get(rel),
                            timeout_s=timeout_s)

    return make
