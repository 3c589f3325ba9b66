"""The first phase read's one-time costs: the background warm-up, z resampling on one BLAS
thread (bitwise the same numbers) and one NIfTI header read less."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hccatom import blas_threads, ct_io
from hccatom.ct_io import read_ct, write_volume
from hccatom.preprocess import _spline_weights, resample_z
from hccatom.volume import Volume


def _ct(shape: tuple[int, int, int] = (48, 40, 36), seed: int = 4) -> Volume:
    rng = np.random.default_rng(seed)
    array = np.clip(rng.normal(40.0, 300.0, size=shape), -1200.0, 3000.0).astype(np.float32)
    array[:, :3] = -1000.0
    return Volume.from_array(array, (4.0, 3.0, 3.0), origin=(-80.0, 12.5, -7.25))


def _old_resample(volume: Volume, thickness_mm: float, order: int) -> np.ndarray:
    """resample_z's slice arithmetic as it was, with BLAS on its default threads."""
    nz, sz = volume.shape[0], volume.spacing[0]
    n_new = max(1, round(nz * sz / thickness_mm))
    step = thickness_mm / sz
    positions = (nz - 1) / 2.0 - (n_new - 1) / 2.0 * step + step * np.arange(n_new)
    src = np.asarray(volume.array)
    weights = _spline_weights(nz, positions, min(order, nz - 1))
    out = np.empty((n_new, *src.shape[1:]), dtype=np.float32)
    for k, row in enumerate(weights):
        (taps,) = np.nonzero(row)
        j0, j1 = int(taps[0]), int(taps[-1]) + 1
        out[k] = np.tensordot(row[j0:j1].astype(np.float32), src[j0:j1], axes=1)
    return out


@pytest.mark.parametrize(("thickness", "order"), [(1.0, 3), (1.0, 1), (2.5, 5)])
def test_resample_z_on_one_blas_thread_gives_bitwise_the_same_volume(
        thickness: float, order: int) -> None:
    vol = _ct()
    new = resample_z(vol, thickness, order)
    old = _old_resample(vol, thickness, order)
    assert new.array.dtype == old.dtype and new.shape == old.shape
    assert np.array_equal(np.asarray(new.array), old)  # bitwise: no tolerance
    assert new.spacing == (thickness, 3.0, 3.0) and new.direction == vol.direction


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in blas_threads._controller().info()
            if lib["user_api"] == "blas"]


def test_single_blas_thread_limits_inside_and_restores_after_nesting() -> None:
    before = _blas_threads()
    assert before, "NumPy's BLAS library was not found"
    with blas_threads.single_blas_thread():
        assert set(_blas_threads()) == {1}
        with blas_threads.single_blas_thread():  # a second phase at the same time
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}  # the first user still runs limited
    assert _blas_threads() == before


def test_single_blas_thread_restores_when_the_block_raises() -> None:
    before = _blas_threads()
    with pytest.raises(ZeroDivisionError), blas_threads.single_blas_thread():
        _ = 1 / 0
    assert _blas_threads() == before and blas_threads._state["depth"] == 0


def test_resampling_from_two_threads_at_once_stays_exact() -> None:
    vols = [_ct(seed=s) for s in (1, 2)]
    expected = [_old_resample(v, 1.0, 3) for v in vols]
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        results[i] = np.asarray(resample_z(vols[i], 1.0, 3).array)

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(results[i], expected[i]) for i in (0, 1))
    assert blas_threads._state["depth"] == 0


_WARMUP_CHECK = (
    "import sys\n"
    "from hccatom import header_guard\n"
    "from hccatom.read_warmup import start_read_warmup\n"
    "start_read_warmup().join()\n"
    "print('scipy.interpolate' in sys.modules, header_guard._PROBER._proc is not None)\n"
)


@pytest.mark.parametrize(("limit", "child"), [("", "True"), ("0", "False"), ("soon", "False")])
def test_warmup_imports_the_spline_module_and_starts_the_probe_child(
        limit: str, child: str) -> None:
    import os

    env = dict(os.environ, HCCATOM_HEADER_TIMEOUT_S=limit)
    run = subprocess.run([sys.executable, "-c", _WARMUP_CHECK], capture_output=True,
                         text=True, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", child]  # guard off or a bad limit: no child


def test_nifti_read_skips_the_second_header_read_and_keeps_every_voxel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vol = _ct((12, 20, 16))
    calls: list[Path] = []
    real = ct_io._file_info

    def counted(path: Path) -> sitk.ImageFileReader:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(ct_io, "_file_info", counted)
    reads = {s: read_ct(write_volume(vol, tmp_path / f"ct{s}")) for s in (".nii.gz", ".nii",
                                                                         ".mha")}
    assert [p.name for p in calls] == ["ct.mha"]  # MetaImage may carry DICOM tags: read
    for back in reads.values():
        assert np.array_equal(np.asarray(back.array), np.asarray(vol.array))
        assert (back.spacing, back.origin, back.direction) == (
            vol.spacing, vol.origin, vol.direction)
