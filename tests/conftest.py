"""Shared test fixtures and marker handling."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT / "tests" / "data" / "real"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with the reason, tests whose hardware or extra is absent."""
    has_torch = _has("torch")
    has_cuda = _has_cuda()
    has_trt = _has("tensorrt")
    for item in items:
        if "export" in item.keywords and not has_torch:
            item.add_marker(pytest.mark.skip(reason="needs the export extra (torch)"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)"))
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(
                pytest.mark.skip(reason="needs TensorRT, which cannot be installed here")
            )


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The small real CT files committed in the repository (tests/data/real, with licences)."""
    if not REAL_DATA.is_dir():
        pytest.fail(f"real test data not found at {REAL_DATA}: the clone is incomplete")
    return REAL_DATA
