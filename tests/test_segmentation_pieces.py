"""Runtime pieces of the nnU-Net segmentation (no torch): tiles, Gaussian, padding, resampling,
normalisation, cropping, the sliding window and the spec. Known answers are worked by hand
from nnU-Net v2's source (see each module's docstring)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hccatom.errors import BundleFormatError
from hccatom.segmentation import (
    CTIntensityStats,
    LabelMeaning,
    ResamplingSpec,
    SegmentationSpec,
    compute_new_shape,
    compute_steps,
    gaussian_importance,
    mirror_combinations,
    pad_to_patch,
    resample,
    separate_z_axis,
    skimage_resize,
    sliding_window_logits,
    tile_starts,
)
from hccatom.segmentation.label_resampling import channel_argmax, linear_resize_argmax
from hccatom.segmentation.pipeline import Preprocessed, logits_to_labels
from hccatom.segmentation.preprocessing import ct_normalize, nonzero_bbox
from hccatom.segmentation.resampling import (
    linear_resize,
    linear_support,
    separable_resize,
    spline_zoom_matrix,
)


def make_spec(**over: object) -> SegmentationSpec:
    base: dict[str, object] = {
        "configuration": "3d_fullres",
        "dims": 3,
        "patch_size": [8, 12, 16],
        "target_spacing_mm": [3.0, 2.0, 2.0],
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "ct_intensity": {"mean": 60.0, "std": 20.0, "percentile_00_5": 0.0,
                         "percentile_99_5": 200.0},
        "resampling_data": {"order": 3, "order_z": 0},
        "resampling_probabilities": {"order": 1, "order_z": 0},
        "mirror_axes": [0, 1, 2],
        "num_output_channels": 3,
        "folds": [{"fold": 0, "onnx": "fold_0.onnx", "sha256": "0" * 64}],
        "labels": {"channel_names": ["background", "liver", "tumour"],
                   "channel_to_label": [0, 1, 2], "liver_channel": 1, "tumour_channel": 2},
    }
    base.update(over)
    return SegmentationSpec.model_validate(base)


# --- tiles ------------------------------------------------------------------------------
def test_steps_match_nnunet_docstring_example() -> None:
    # nnU-Net's comment: image 110, patch 64, step 0.5 -> starts 0, 23, 46
    assert compute_steps([110], [64], 0.5) == [[0, 23, 46]]


def test_steps_cover_image_and_overlap() -> None:
    steps = compute_steps([35, 53, 61], [24, 32, 40], 0.5)
    assert steps == [[0, 11], [0, 10, 21], [0, 10, 21]]
    assert compute_steps([24], [24], 0.5) == [[0]]
    assert compute_steps([100], [20], 1.0) == [[0, 20, 40, 60, 80]]
    with pytest.raises(ValueError):
        compute_steps([10], [20], 0.5)
    with pytest.raises(ValueError):
        compute_steps([40], [20], 0.0)


def test_tile_starts_order_and_2d() -> None:
    starts = tile_starts([35, 53, 61], [24, 32, 40], 0.5)
    assert len(starts) == 2 * 3 * 3
    assert starts[:4] == [(0, 0, 0), (0, 0, 10), (0, 0, 21), (0, 10, 0)]  # last axis fastest
    s2 = tile_starts([3, 40, 40], [32, 32], 0.5)
    assert len(s2) == 3 * 2 * 2 and s2[0] == (0, 0, 0) and s2[-1] == (2, 8, 8)


def test_mirror_combinations() -> None:
    assert mirror_combinations([0, 1, 2]) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert mirror_combinations([]) == []


def test_gaussian_importance() -> None:
    g = gaussian_importance([8, 12, 16])
    assert g.shape == (8, 12, 16) and g.dtype == np.float32
    assert g.max() == pytest.approx(10.0, abs=1e-2)
    assert np.unravel_index(np.argmax(g), g.shape) == (4, 6, 8)  # centre at i // 2
    assert g.min() > 0  # zeros replaced by the smallest non-zero value
    assert np.array_equal(g, g.astype(np.float16).astype(np.float32))  # float16 values
    assert not g.flags.writeable


def test_pad_to_patch_centres_and_reverts() -> None:
    img = np.arange(2 * 3 * 5, dtype=np.float32).reshape(1, 2, 3, 5)
    padded, slicer = pad_to_patch(img, (5, 3, 8))
    assert padded.shape == (1, 5, 3, 8)
    # odd padding: the larger half goes after the content (pad_nd_image)
    assert slicer[1:] == (slice(1, 3), slice(0, 3), slice(1, 6))
    np.testing.assert_array_equal(padded[slicer], img)
    assert padded.sum() == img.sum()
    same, sl = pad_to_patch(img, (2, 3, 5))
    assert same is img and sl[1:] == (slice(0, 2), slice(0, 3), slice(0, 5))


# --- resampling -------------------------------------------------------------------------
def test_skimage_resize_order1_known_answer() -> None:
    # pixel-centre alignment: out[i] samples (i + 0.5) * 2/4 - 0.5 = -0.25, 0.25, 0.75, 1.25,
    # edge values extended
    out = skimage_resize(np.array([[0.0, 1.0]]), (1, 4), 1)
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])
    down = skimage_resize(np.array([[0.0, 1.0, 2.0, 3.0]]), (1, 2), 1)
    np.testing.assert_allclose(down, [[0.5, 2.5]])  # no anti-aliasing


def test_skimage_resize_order3_clips_to_input_range() -> None:
    step = np.zeros((1, 8))
    step[0, 4:] = 1.0
    out = skimage_resize(step, (1, 21), 3)
    assert out.min() >= 0.0 and out.max() <= 1.0  # cubic overshoot clipped
    assert 0.0 < out[0, 10] < 1.0
    const = skimage_resize(np.full((3, 4, 5), 7.0), (6, 2, 9), 3)
    np.testing.assert_allclose(const, 7.0)


def test_skimage_resize_matches_scikit_image_when_present() -> None:
    sk = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(0)
    img = rng.normal(size=(7, 9, 11))
    for order in (1, 3):
        for shape in [(12, 5, 11), (3, 18, 7)]:
            ref = sk.resize(img, shape, order, mode="edge", anti_aliasing=False)
            np.testing.assert_allclose(skimage_resize(img, shape, order), ref, atol=1e-12)


@pytest.mark.parametrize("order", [0, 2, 3, 4, 5])
def test_separable_resize_equals_the_3d_zoom(order: int) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(order)
    img = rng.normal(size=(9, 14, 6))
    for shape in [(3, 5, 13), (20, 14, 2), (9, 14, 6), (1, 1, 1)]:
        ref = ndimage.zoom(img, np.divide(shape, img.shape), order=order, mode="nearest",
                           grid_mode=True, output=np.float64)
        got = separable_resize(img, shape, order)
        assert got.shape == shape and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="does not match"):
        separable_resize(img, (3, 5), order)
    # long axes: the banded products (each output reads a narrow span) equal the zoom too
    long = rng.normal(size=(300, 4, 170)).astype(np.float32)
    for shape in [(61, 4, 34), (300, 9, 401)]:
        ref = ndimage.zoom(long, np.divide(shape, long.shape), order=order, mode="nearest",
                           grid_mode=True, output=np.float64)
        np.testing.assert_allclose(separable_resize(long, shape, order), ref, rtol=0, atol=1e-12)


def test_spline_zoom_matrix_rows_reproduce_constants() -> None:
    m = spline_zoom_matrix(17, 5, 3)
    assert m.shape == (5, 17) and not m.flags.writeable
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)  # constants are kept


@pytest.mark.parametrize(("n_in", "n_out"), [(5, 19), (19, 5), (6, 6), (1, 4), (2, 9)])
def test_linear_support_is_exactly_the_outputs_that_read_the_range(n_in: int, n_out: int) -> None:
    for lo in range(n_in):
        for hi in range(lo + 1, n_in + 1):
            bump = np.zeros(n_in)
            bump[lo:hi] = 1.0
            # an output reads [lo, hi) iff it changes when those inputs change (weights > 0
            # or the lower tap of a clamped edge); tap indices are what linear_support uses
            a, b = linear_support(n_in, n_out, lo, hi)
            touched = np.flatnonzero(linear_resize(bump[None], (1, n_out))[0] != 0)
            assert a <= b
            if touched.size:  # every output with a non-zero weight on the range is inside
                assert a <= touched[0] and touched[-1] < b


def _full_argmax(logits: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The plain way: every channel resized in full (float32, stored in the logits' dtype)."""
    back = np.stack([linear_resize(logits[c].astype(np.float32), shape).astype(logits.dtype)
                     for c in range(logits.shape[0])])
    return np.argmax(back, axis=0).astype(np.uint8)


def _organ_logits(rng: np.random.Generator, coarse: tuple[int, ...], channels: int = 3,
                  noise: float = 0.5) -> np.ndarray:
    logits = np.empty((channels, *coarse), dtype=np.float32)
    logits[0] = 4.0 + rng.normal(0, noise, coarse)
    logits[1:] = rng.normal(-2.0, noise, (channels - 1, *coarse))
    centre = tuple(slice(n // 4, max(n // 4 + 1, 3 * n // 4)) for n in coarse)
    logits[(1, *centre)] += 9.0  # an organ
    logits[(channels - 1, *(slice(n // 2, n // 2 + 1) for n in coarse))] += 14.0  # a lesion
    return logits


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize(
    ("coarse", "shape"),
    [((7, 9, 8), (20, 19, 17)), ((7, 9, 8), (7, 30, 3)), ((1, 6, 6), (4, 13, 13)),
     ((12, 10, 9), (5, 31, 9))],
)
def test_linear_resize_argmax_equals_full_resampling(
    dtype: type, coarse: tuple[int, ...], shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(sum(coarse) + sum(shape))
    for noise in (0.5, 3.0):  # clear organ boundaries, then many doubtful cells
        logits = _organ_logits(rng, coarse, noise=noise).astype(dtype)
        got = linear_resize_argmax(logits, shape)
        assert got.shape == shape and got.dtype == np.uint8
        np.testing.assert_array_equal(got, _full_argmax(logits, shape))


def test_linear_resize_argmax_near_ties_and_edge_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    from hccatom.segmentation import label_resampling

    monkeypatch.setattr(label_resampling, "POINTS_PER_CHUNK", 37)  # many chunks
    rng = np.random.default_rng(9)
    # channels 1 and 2 within float16 rounding of each other over the whole organ: every cell
    # there is in doubt, ties go to the lower channel after storage, as in the full path
    logits = _organ_logits(rng, (6, 7, 8)).astype(np.float32)
    logits[2] = logits[1] + rng.choice([0.0, 1e-3, -1e-3], size=logits[1].shape)
    for dtype in (np.float16, np.float32):
        x = logits.astype(dtype)
        np.testing.assert_array_equal(linear_resize_argmax(x, (13, 15, 17)),
                                      _full_argmax(x, (13, 15, 17)))
    background = np.zeros((3, 4, 5, 6), dtype=np.float32)
    background[0] = 5.0
    assert not linear_resize_argmax(background, (8, 10, 12)).any()
    flat = np.zeros((3, 4, 5, 6), dtype=np.float32)  # all channels tie everywhere
    np.testing.assert_array_equal(linear_resize_argmax(flat, (8, 10, 12)), 0)
    with pytest.raises(ValueError, match="do not match"):
        linear_resize_argmax(background, (8, 10))


def _pre(shape_after: tuple[int, ...], spacing: tuple[float, ...]) -> Preprocessed:
    return Preprocessed(
        data=np.zeros((1, 1, 1, 1), np.float32),
        bbox=[[0, s] for s in shape_after],
        shape_before_cropping=shape_after,
        shape_after_cropping=shape_after,
        spacing_transposed=spacing,
        target_spacing=(3.0, 2.0, 2.0),
    )


def test_logits_to_labels_order1_and_fallback_paths_agree() -> None:
    rng = np.random.default_rng(4)
    logits = _organ_logits(rng, (7, 9, 8)).astype(np.float16)
    pre = _pre((20, 19, 17), (1.0, 0.9, 0.9))
    linear = make_spec()
    timings: dict[str, float] = {}
    fast = logits_to_labels(logits, pre, linear, timings)
    assert "resample_out" in timings and "argmax" not in timings  # the order-1 path
    np.testing.assert_array_equal(fast, _full_argmax(logits, (20, 19, 17)))
    assert {0, 1, 2} <= set(np.unique(fast))
    # a separate z axis: every channel is resampled in full (nnU-Net's anisotropic path)
    aniso = _pre((20, 19, 17), (0.5, 0.5, 2.0))
    timings = {}
    labels = logits_to_labels(logits, aniso, linear, timings)
    assert {"resample_out", "argmax"} <= set(timings) and labels.shape == (20, 19, 17)
    remapped = make_spec(labels={"channel_names": ["background", "tumour", "liver"],
                                 "channel_to_label": [0, 2, 1], "liver_channel": 2,
                                 "tumour_channel": 1})
    np.testing.assert_array_equal(logits_to_labels(logits, pre, remapped),
                                  np.array([0, 2, 1], np.uint8)[fast])


def test_separate_z_rule() -> None:
    assert separate_z_axis((9.0, 2.2, 2.2), (3.5, 2.4, 2.4)) == 0  # current spacing first
    assert separate_z_axis((2.0, 2.0, 2.0), (3.0, 0.8, 0.8)) == 0  # then the target
    assert separate_z_axis((3.0, 2.4, 2.4), (3.5, 2.4, 2.4)) is None
    assert separate_z_axis((6.0, 2.0, 2.0), (2.0, 2.0, 2.0)) is None  # ratio 3.0 is not > 3
    assert separate_z_axis((1.0, 4.0, 4.0), (1.0, 1.0, 1.0)) is None  # two low-res axes tie
    assert separate_z_axis((1.0, 1.0, 5.0), (1.0, 1.0, 1.0)) == 2
    assert separate_z_axis((2.0, 2.0, 2.5), (2.0, 2.0, 2.0), force_separate_z=True) == 2
    assert separate_z_axis((9.0, 1.0, 1.0), (1.0, 1.0, 1.0), force_separate_z=False) is None


def test_resample_separate_z_uses_nearest_along_z() -> None:
    # z-ramp of 4 slices at 9 mm -> 10 slices: order_z 0 picks slices, values stay integers
    data = np.broadcast_to(np.arange(4.0)[:, None, None], (4, 6, 6))[None].astype(np.float32)
    spec = ResamplingSpec(order=3, order_z=0)
    out = resample(data, (10, 6, 6), (9.0, 2.0, 2.0), (3.6, 2.0, 2.0), spec)
    assert out.shape == (1, 10, 6, 6) and out.dtype == np.float32
    # coordinates 0.4 * (i + 0.5) - 0.5 = -0.3, 0.1, 0.5, ... rounded to the nearest slice
    # (halves up, as map_coordinates order 0 does), clamped at the edges
    np.testing.assert_array_equal(out[0, :, 0, 0], [0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    # without the anisotropy rule the same data is cubic-interpolated along z (not integers)
    iso = resample(data, (10, 6, 6), (2.9, 2.0, 2.0), (1.16, 2.0, 2.0), spec)
    assert not np.allclose(iso[0, :, 0, 0], np.round(iso[0, :, 0, 0]))


def test_resample_same_shape_is_identity() -> None:
    data = np.ones((2, 3, 4, 5), dtype=np.float16)
    assert resample(data, (3, 4, 5), (1, 1, 1), (1, 1, 1), ResamplingSpec(order=1)) is data


def test_compute_new_shape() -> None:
    assert compute_new_shape((39, 54, 62), (3.1, 2.4, 2.4), (3.485, 2.44, 2.44)) == (35, 53, 61)


# --- normalisation and cropping ---------------------------------------------------------
def test_ct_normalize_known_values() -> None:
    stats = CTIntensityStats(mean=60.0, std=20.0, percentile_00_5=0.0, percentile_99_5=200.0)
    out = ct_normalize(np.array([-1000.0, 0.0, 60.0, 100.0, 3000.0]), stats)
    np.testing.assert_allclose(out, [-3.0, -3.0, 0.0, 2.0, 7.0])
    assert out.dtype == np.float32


def test_nonzero_bbox() -> None:
    img = np.zeros((6, 7, 8), dtype=np.float32)
    img[1:4, 2:6, 3:5] = -1000.0
    img[2, 3, 3] = 0.0  # an interior zero is a hole, filled
    assert nonzero_bbox(img) == [[1, 4], [2, 6], [3, 5]]
    assert nonzero_bbox(np.zeros((3, 4, 5))) == [[0, 3], [0, 4], [0, 5]]
    assert nonzero_bbox(np.array([0.0, 0.0, 2.0, 0.0, 3.0, 0.0])) == [[2, 5]]


def _box_of(mask: np.ndarray) -> list[list[int]]:
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(o for o in range(mask.ndim) if o != axis)))
        box.append([int(hit[0]), int(hit[-1]) + 1])
    return box


def test_nonzero_bbox_equals_box_of_hole_filled_mask() -> None:
    from scipy.ndimage import binary_fill_holes

    rng = np.random.default_rng(2)
    for _ in range(20):
        img = np.zeros((40, 11, 9), dtype=np.float32)
        lo = rng.integers(0, 6, 3)
        hi = lo + rng.integers(2, 6, 3)
        block = (slice(lo[0], hi[0] + 20), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        img[block] = rng.choice([0.0, -3.0], p=[0.4, 0.6], size=img[block].shape)
        if not img.any():
            continue
        assert nonzero_bbox(img) == _box_of(binary_fill_holes(img != 0))


# --- sliding window ---------------------------------------------------------------------
def _echo(x: np.ndarray) -> np.ndarray:
    """A fake 3-channel network: logits (x, -x, 2x); flip-equivariant (mirroring: no-op)."""
    return np.concatenate([x, -x, 2 * x], axis=1)


@pytest.mark.parametrize("accumulate", ["float32", "float16"])
def test_sliding_window_reconstructs_a_pointwise_network(accumulate: str) -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(1, 13, 30, 37)).astype(np.float32)  # smaller than patch in z
    spec = make_spec()
    calls: list[tuple[int, int]] = []
    out = sliding_window_logits(
        data, spec, [_echo, _echo], step_size=0.5, mirror_axes=(0, 2), batch_size=3,
        progress=lambda d, t: calls.append((d, t)), accumulate=accumulate,  # type: ignore[arg-type]
    )
    assert out.shape == (3, 13, 30, 37)
    if accumulate == "float32":
        np.testing.assert_allclose(out[0], data[0], atol=1e-5)
        np.testing.assert_allclose(out[1], -data[0], atol=1e-5)
        np.testing.assert_allclose(out[2], 2 * data[0], atol=1e-5)
    else:
        # float16 sums, as nnU-Net keeps them: fine wherever a tile centre is near (all
        # voxels at least a quarter patch from the border); at the corners the Gaussian
        # weights underflow float16 and the logits are coarse, in nnU-Net too
        inner = (slice(2, -2), slice(3, -3), slice(4, -4))
        np.testing.assert_allclose(out[0][inner], data[0][inner], atol=1e-2, rtol=1e-2)
        assert out.dtype == np.float16
    n_tiles = len(tile_starts((13, 30, 37), (8, 12, 16), 0.5))
    assert calls[-1] == (2 * n_tiles, 2 * n_tiles)  # two folds
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_sliding_window_mirroring_calls_and_flips_back() -> None:
    seen: list[np.ndarray] = []

    def net(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        # not flip-equivariant: adds a ramp along the last axis; mirroring averages it to
        # its mean, so the result is x + mean(ramp) everywhere
        ramp = np.arange(x.shape[-1], dtype=np.float32)
        return np.concatenate([x + ramp, -x, x], axis=1)

    data = np.zeros((1, 8, 12, 16), dtype=np.float32)  # exactly one tile
    spec = make_spec()
    out = sliding_window_logits(data, spec, [net], mirror_axes=(0, 1, 2), accumulate="float32")
    assert len(seen) == 8  # plain + 7 flips
    np.testing.assert_allclose(out[0], 7.5, atol=1e-5)
    seen.clear()
    out = sliding_window_logits(data, spec, [net], mirror_axes=(), accumulate="float32")
    assert len(seen) == 1
    np.testing.assert_allclose(out[0, 0, 0], np.arange(16), atol=1e-5)


# --- spec -------------------------------------------------------------------------------
def test_spec_roundtrip_and_validation(tmp_path: object) -> None:
    from pathlib import Path

    spec = make_spec()
    path = spec.save(Path(str(tmp_path)))
    raw = json.loads(path.read_text())
    assert raw["schema"] == "hccatom.segmentation-spec/1"
    assert SegmentationSpec.load(path.parent) == spec
    with pytest.raises(ValueError):
        make_spec(transpose_forward=[0, 0, 1])
    with pytest.raises(ValueError):
        make_spec(transpose_forward=[2, 0, 1], transpose_backward=[2, 0, 1])
    with pytest.raises(ValueError):
        make_spec(patch_size=[8, 8])
    with pytest.raises(ValueError):
        make_spec(mirror_axes=[3])
    with pytest.raises(BundleFormatError):
        SegmentationSpec.load(Path(str(tmp_path)) / "nowhere")


def test_label_meaning_validation() -> None:
    ok = LabelMeaning(channel_names=["bg", "liver", "tumour"], channel_to_label=[0, 1, 2],
                      liver_channel=1, tumour_channel=2)
    assert ok.tumour_channel == 2
    with pytest.raises(ValueError):
        LabelMeaning(channel_names=["bg", "liver", "tumour"], channel_to_label=[0, 1, 2],
                     liver_channel=2, tumour_channel=1)
    with pytest.raises(ValueError):
        LabelMeaning(channel_names=["liver", "bg"], channel_to_label=[1, 0],
                     liver_channel=0, tumour_channel=1)


def test_channel_argmax_equals_numpy_argmax_with_ties() -> None:

    rng = np.random.default_rng(3)
    values = rng.integers(0, 3, size=(3, 5, 6, 7)).astype(np.float32)  # many ties
    assert np.array_equal(channel_argmax(values), np.argmax(values, axis=0))
    values = rng.normal(size=(4, 3, 4, 5)).astype(np.float16)
    assert np.array_equal(channel_argmax(values), np.argmax(values, axis=0))
