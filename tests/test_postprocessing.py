"""nnU-Net postprocessing (keep the largest connected component): data, parity, reading, runtime.

Parity is against nnU-Net's own ``remove_all_but_largest_component_from_segmentation`` and
``apply_postprocessing`` (export extra); the known-answer and runtime tests need no extra.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from hccatom.segmentation import SegmentationSpec
from hccatom.segmentation.postprocessing import (
    KeepLargestComponent,
    Postprocessing,
    apply_postprocessing,
    keep_largest_component,
)

FIXTURE = Path(__file__).parent / "fixtures" / "nnunet"
VOLUMES = FIXTURE / "volumes"
IDENTITY = [0, 1, 2]
FOREGROUND_THEN_EACH = Postprocessing(steps=[KeepLargestComponent(labels=[1, 2]),
                                             KeepLargestComponent(labels=[1]),
                                             KeepLargestComponent(labels=[2])])


def fixture_labels(name: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(VOLUMES / name))).astype(np.uint8)


def random_labels(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Blobs of labels 1 and 2 with scattered specks: many components, some of equal size."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    out = np.zeros(shape, np.uint8)
    out[smooth > 0.05] = 1
    out[smooth > 0.15] = 2
    specks = rng.random(shape) < 0.01
    out[specks] = rng.integers(1, 3, size=int(specks.sum()), dtype=np.uint8)
    return out


def test_known_answer_largest_kept_ties_kept_diagonal_connects() -> None:
    a = np.zeros((1, 6, 9), np.uint8)
    a[0, 0:2, 0:2] = 1  # 4 voxels
    a[0, 4:6, 0:2] = 1  # 4 voxels: ties with the first, both kept
    a[0, 0, 5] = 1  # 1 voxel alone: removed
    a[0, 3, 7] = 2
    a[0, 4, 8] = 2  # diagonal neighbour of (3, 7): one component (full connectivity)
    a[0, 0, 8] = 2  # alone: removed
    out = keep_largest_component(a, [1])
    assert out[0, 0, 5] == 0 and out[0, 0:2, 0:2].all() and out[0, 4:6, 0:2].all()
    out2 = keep_largest_component(out, [2])
    assert out2[0, 3, 7] == 2 and out2[0, 4, 8] == 2 and out2[0, 0, 8] == 0
    assert a[0, 0, 5] == 1  # input untouched
    assert keep_largest_component(np.zeros((3, 3), np.uint8), [1]).sum() == 0


def test_runtime_maps_nnunet_labels_through_the_channel_table() -> None:
    a = np.zeros((5, 5), np.uint8)
    a[0, 0] = 2
    a[3:5, 3:5] = 2
    post = Postprocessing(steps=[KeepLargestComponent(labels=[1])])  # nnU-Net label 1
    out = apply_postprocessing(a, post, [0, 2, 1])  # ... is hccatom's tumour (2)
    assert out[0, 0] == 0 and out[3:5, 3:5].all()
    assert apply_postprocessing(a, None, IDENTITY) is a


@pytest.fixture(scope="module")
def nnunet_pp():  # type: ignore[no-untyped-def]
    pytest.importorskip("nnunetv2", reason="parity with nnU-Net needs the export extra")
    from nnunetv2.postprocessing import remove_connected_components as rcc

    return rcc


def nnunet_apply(rcc, labels: np.ndarray, post: Postprocessing) -> np.ndarray:  # type: ignore[no-untyped-def]
    fns = [rcc.remove_all_but_largest_component_from_segmentation] * len(post.steps)
    kwargs = [{"labels_or_regions": s.labels if len(s.labels) > 1 else s.labels[0]}
              for s in post.steps]
    out: np.ndarray = rcc.apply_postprocessing(labels, fns, kwargs)
    return out


@pytest.mark.export
@pytest.mark.parametrize("seed", range(6))
def test_parity_with_nnunet_on_random_label_maps(nnunet_pp, seed: int) -> None:  # type: ignore[no-untyped-def]
    shape = (12, 16, 14) if seed % 2 == 0 else (40, 36)
    labels = random_labels(seed, shape)
    for post in (FOREGROUND_THEN_EACH,
                 Postprocessing(steps=[KeepLargestComponent(labels=[2])]),
                 Postprocessing(steps=[KeepLargestComponent(labels=[1, 2])])):
        ours = apply_postprocessing(labels, post, IDENTITY)
        theirs = nnunet_apply(nnunet_pp, labels, post)
        np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(apply_postprocessing(labels, FOREGROUND_THEN_EACH, IDENTITY),
                              labels)  # the maps do have components to remove


@pytest.mark.export
@pytest.mark.parametrize("name", ["typical_nnunet_labels.nii.gz", "typical_labels.nii.gz",
                                  "small_nnunet_labels.nii.gz", "zero_border_labels.nii.gz"])
def test_parity_with_nnunet_on_fixture_label_maps(nnunet_pp, name: str) -> None:  # type: ignore[no-untyped-def]
    labels = fixture_labels(name)
    for post in (FOREGROUND_THEN_EACH, Postprocessing(steps=[KeepLargestComponent(labels=[2])])):
        np.testing.assert_array_equal(apply_postprocessing(labels, post, IDENTITY),
                                      nnunet_apply(nnunet_pp, labels, post))


# --- reading nnU-Net's files (export time) ----------------------------------------------
@pytest.mark.export
def test_read_nnunet_pickle_and_json(nnunet_pp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from hccatom.export.nnunet_postprocessing import read_postprocessing

    fn = nnunet_pp.remove_all_but_largest_component_from_segmentation
    kwargs = [{"labels_or_regions": [1, 2]}, {"labels_or_regions": 2}]
    with open(tmp_path / "postprocessing.pkl", "wb") as f:  # as nnU-Net's save_pickle does
        pickle.dump(([fn, fn], kwargs), f)
    (tmp_path / "postprocessing.json").write_text(json.dumps({
        "input_folder": {}, "postprocessed": {},
        "postprocessing_fns": [fn.__name__, fn.__name__], "postprocessing_kwargs": kwargs,
    }))
    expected = [[1, 2], [2]]
    for name in ("postprocessing.pkl", "postprocessing.json"):
        post = read_postprocessing(tmp_path / name)
        assert [s.labels for s in post.steps] == expected and post.source == name


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("echo pwned > evil.txt",))


def test_restricted_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="hccatom.export needs the export extra")
    from hccatom.errors import ExportError
    from hccatom.export.nnunet_postprocessing import read_postprocessing

    path = tmp_path / "postprocessing.pkl"
    path.write_bytes(pickle.dumps(([_Evil()], [{}])))
    with pytest.raises(ExportError, match=r"only nnU-Net's remove_all_but_largest"):
        read_postprocessing(path)
    assert not (tmp_path / "evil.txt").exists() and not Path("evil.txt").exists()
    bad = tmp_path / "postprocessing.json"
    bad.write_text(json.dumps({"postprocessing_fns": ["other_fn"],
                               "postprocessing_kwargs": [{}]}))
    with pytest.raises(ExportError, match="step 0 is 'other_fn'"):
        read_postprocessing(bad)


# --- the spec and the runtime -------------------------------------------------------------
def test_spec_stores_postprocessing_and_checks_the_label_table() -> None:
    spec = SegmentationSpec.load(FIXTURE / "export")
    with_pp = SegmentationSpec.model_validate(
        {**spec.model_dump(by_alias=True), "postprocessing": FOREGROUND_THEN_EACH.model_dump()}
    )
    again = SegmentationSpec.model_validate_json(with_pp.to_json())
    assert again.postprocessing == FOREGROUND_THEN_EACH
    bad = {**spec.model_dump(by_alias=True),
           "postprocessing": {"steps": [{"labels": [5]}]}}
    with pytest.raises(ValueError, match="exceed"):
        SegmentationSpec.model_validate(bad)


def test_segmenter_applies_the_spec_postprocessing() -> None:
    from hccatom import Segmenter, Volume

    img = sitk.ReadImage(str(VOLUMES / "typical_ct.nii.gz"))
    ct = Volume.from_array(sitk.GetArrayFromImage(img).astype(np.float32),
                           img.GetSpacing()[::-1])
    spec = SegmentationSpec.load(FIXTURE / "export")
    post = Postprocessing(steps=[KeepLargestComponent(labels=[1, 2]),
                                 KeepLargestComponent(labels=[2])])
    with_pp = SegmentationSpec.model_validate(
        {**spec.model_dump(by_alias=True), "postprocessing": post.model_dump()}
    )
    plain = Segmenter(FIXTURE / "export", device="cpu", threads=1, folds=[0]).segment(ct).array
    timings: dict[str, float] = {}
    done = Segmenter(FIXTURE / "export", device="cpu", threads=1, folds=[0],
                     spec=with_pp).segment(ct, timings=timings).array
    structure = np.ones((3, 3, 3), bool)
    assert ndimage.label(plain == 2, structure=structure)[1] >= 2  # there is something to remove
    assert ndimage.label(done == 2, structure=structure)[1] == 1
    np.testing.assert_array_equal(done, apply_postprocessing(plain, post, IDENTITY))
    assert "postprocess" in timings
