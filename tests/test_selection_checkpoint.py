"""Strict checkpoint import in the authors' key format (.pth with/without module., wrapped,
.safetensors); missing, extra and wrongly shaped keys each named; size mismatches explained."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.export
torch = pytest.importorskip("torch")

from selection_reference import authors_keys  # noqa: E402

from hccatom.errors import CheckpointError  # noqa: E402
from hccatom.export.checkpoint import (  # noqa: E402
    describe_size,
    load_selection,
    normalise_state_dict,
    read_checkpoint,
)
from hccatom.export.selection_model import SelectionModel, get_size  # noqa: E402


def authors_state_dict(size: str = "tiny", seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict as the authors' code would save it, built from the key list alone:
    every tensor distinct (random), so a misplaced tensor cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    keys = authors_keys(get_size(size))
    return {k: torch.randn(shape, generator=gen) for k, shape in keys.items()}


def _assert_landed(model: SelectionModel, sd: dict[str, torch.Tensor]) -> None:
    params = model.state_dict()
    assert set(params) == set(sd)
    for key, value in sd.items():
        assert torch.equal(params[key], value), key


@pytest.mark.parametrize("prefix", ["", "module."])
@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_authors_format_loads_every_tensor(
    tmp_path: Path, prefix: str, wrapper: str | None
) -> None:
    sd = authors_state_dict()
    saved: object = {prefix + k: v for k, v in sd.items()}
    if wrapper:
        saved = {wrapper: saved, "epoch": torch.tensor(12)}
    path = tmp_path / "ckpt.pth"
    torch.save(saved, path)
    model = load_selection(path, size="tiny")
    assert not model.training
    _assert_landed(model, sd)


def test_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = authors_state_dict(seed=1)
    path = tmp_path / "ckpt.safetensors"
    save_file({"module." + k: v.contiguous() for k, v in sd.items()}, str(path))
    _assert_landed(load_selection(path, size="tiny"), sd)


def test_state_dict_object_and_fusion_recorded() -> None:
    sd = authors_state_dict(seed=2)
    model = load_selection(sd, size="tiny", fusion="image_only")
    assert model.fusion == "image_only"
    _assert_landed(model, sd)


def test_missing_key_named_with_size() -> None:
    sd = authors_state_dict()
    del sd["transformer.encoder.layer.3.ffn.fc1.weight"]
    with pytest.raises(CheckpointError) as err:
        load_selection(sd, size="tiny")
    msg = str(err.value)
    assert "1 missing key(s): transformer.encoder.layer.3.ffn.fc1.weight (128x64)" in msg
    assert "unexpected" not in msg and "wrongly shaped" not in msg


def test_unexpected_key_named() -> None:
    sd = authors_state_dict()
    sd["transformer.encoder.layer.2.attn.query_text.weight"] = torch.zeros(64, 64)
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\): "
                       r"transformer\.encoder\.layer\.2\.attn\.query_text\.weight \(64x64\)"):
        load_selection(sd, size="tiny")


def test_wrong_shape_named_with_both_shapes() -> None:
    sd = authors_state_dict()
    sd["head.weight"] = torch.zeros(2, 64)
    sd["head.bias"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as err:
        load_selection(sd, size="tiny")
    msg = str(err.value)
    assert "head.weight: checkpoint 2x64, model 1x64" in msg
    assert "head.bias: checkpoint 2, model 1" in msg


def test_nothing_loaded_on_failure() -> None:
    """Strict means all or nothing: a failing check leaves no half-loaded model around."""
    sd = authors_state_dict()
    del sd["head.bias"]
    with pytest.raises(CheckpointError, match="Nothing was loaded"):
        load_selection(sd, size="tiny")


def test_other_size_is_identified() -> None:
    sd = authors_state_dict("tiny")
    with pytest.raises(CheckpointError) as err:
        load_selection(sd, size="small")
    msg = str(err.value)
    assert "looks like size 'tiny' (hidden 64, 4 layers, MLP 128)" in msg
    assert "model is size 'small' (hidden 192" in msg
    assert "transformer.embeddings.cls_token: checkpoint 1x1x64, model 1x1x192" in msg
    # an unnamed size is described by its numbers
    odd = {"transformer.embeddings.cls_token": torch.zeros(1, 1, 96),
           "transformer.encoder.layer.0.ffn.fc1.weight": torch.zeros(200, 96),
           "transformer.encoder.layer.4.ffn.fc1.weight": torch.zeros(200, 96)}
    assert describe_size(odd) == "hidden 96, 5 layers, MLP 200 (no named size matches)"


def test_long_listings_are_truncated() -> None:
    sd = authors_state_dict()
    sd = {k: v for k, v in sd.items() if "layer.3." not in k}
    with pytest.raises(CheckpointError, match=r"missing key\(s\): .*\.\.\. and \d+ more"):
        load_selection(sd, size="tiny")


class _NotATensor:
    """A pickled object that ``weights_only=True`` must refuse."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_pickled_objects_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"head.bias": torch.zeros(1)}, "obj": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_checkpoint(path)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "none.pth")
    other = tmp_path / "model.h5"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported checkpoint type"):
        read_checkpoint(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(junk)


def test_containers_without_tensors_refused() -> None:
    with pytest.raises(CheckpointError, match="no state dict"):
        normalise_state_dict({"epoch": 3, "optimizer": {}})
    with pytest.raises(CheckpointError, match="twice"):
        normalise_state_dict({"module.head.bias": torch.zeros(1), "head.bias": torch.zeros(1)})


def test_same_size_problem_gives_no_size_hint() -> None:
    sd = authors_state_dict()
    sd["transformer.encoder.layer.1.attn.out_text.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        load_selection(sd, size="tiny")
    assert "looks like" not in str(err.value)
    assert "out_text.bias: checkpoint 3, model 64" in str(err.value)
