"""Shared test fixtures and marker handling."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

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


# --- explanations and reports (tests/test_explain.py, tests/test_report.py) ---------------
@pytest.fixture(scope="session")
def explain_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo bundle plus explain graphs and reference values (built with onnx)."""
    pytest.importorskip("onnx", reason="explain graphs are built with onnx (export extra)")
    import hccatom.demo
    from hccatom.bundle.explain_spec import reference_values
    from hccatom.export.explain_bundle import add_explain_to_bundle
    from hccatom.synthetic import draw_cohort

    cohort = [p.clinical for p in draw_cohort("TACE", 40, seed=5).patients]
    out = tmp_path_factory.mktemp("explain") / "bundle"
    return add_explain_to_bundle(hccatom.demo.demo_bundle_path(), out,
                                 clinical_reference=reference_values(cohort),
                                 reference_source="40 synthetic records", verify=False)


@pytest.fixture(scope="session")
def explained(explain_bundle: Path) -> Any:
    """The demo patient's recommendation with explain=True (one full chain run)."""
    import hccatom
    from hccatom.demo import demo_case

    ct, clinical, _ = demo_case(0)
    predictor = hccatom.Predictor.from_bundle(explain_bundle, device="cpu")
    return predictor.recommend(ct, clinical, explain=True)
