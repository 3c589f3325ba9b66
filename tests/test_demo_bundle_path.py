"""``hccatom.demo.demo_bundle_path()``: where the quick start says the demo bundle is."""

from __future__ import annotations

from pathlib import Path

import pytest

import hccatom
from hccatom import demo
from hccatom.bundle import load_bundle
from hccatom.errors import BundleError, BundleNotFoundError


def test_demo_bundle_is_package_data_and_a_loadable_synthetic_bundle() -> None:
    path = demo.demo_bundle_path()
    assert path == Path(hccatom.__file__).resolve().parent / "data" / "demo_bundle"
    assert (path / "manifest.json").is_file()
    with load_bundle(path) as bundle:  # checksums verified
        assert bundle.manifest.synthetic is True
        assert bundle.manifest.name == "hccatom-demo-synthetic"


def test_missing_demo_bundle_is_a_bundle_error_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "DEMO_BUNDLE_DIR", tmp_path / "demo_bundle")
    with pytest.raises(BundleNotFoundError, match="demo build") as info:
        demo.demo_bundle_path()
    assert isinstance(info.value, BundleError)
