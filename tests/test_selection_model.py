"""SELECTION in PyTorch: authors' key names, token layout, fusion modes, batch behaviour.

The model is checked against an independent, deliberately naive re-statement of the facts
file (explicit softmax attention, written out per stream) computed from the state dict.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.export
torch = pytest.importorskip("torch")

from selection_reference import authors_keys, reference_forward  # noqa: E402

from hccatom.export.selection_model import (  # noqa: E402
    SIZES,
    SelectionModel,
    SelectionSize,
    get_size,
    init_random,
)
from hccatom.export.selection_onnx import example_inputs  # noqa: E402

Tensor = torch.Tensor


# --- tests --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["tiny", "small", "paper"])
def test_state_dict_is_the_authors_layout(size: str) -> None:
    cfg = get_size(size)
    model = SelectionModel(size)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == authors_keys(cfg)


def test_paper_size_is_vit_b16() -> None:
    p = SIZES["paper"]
    assert (p.hidden, p.layers, p.heads, p.mlp, p.image_size, p.patch) == (
        768, 12, 12, 3072, 224, 16
    )
    assert p.patches_per_phase == 196 and p.n_clinical == 20
    t = SIZES["tiny"]
    assert (t.hidden, t.layers, t.heads, t.mlp, t.patches_per_phase) == (64, 4, 4, 128, 196)


def test_bad_sizes_and_modes_rejected() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SelectionSize("x", hidden=65, layers=4, heads=4, mlp=8)
    with pytest.raises(ValueError, match="multimodal_layers"):
        SelectionSize("x", hidden=64, layers=2, heads=4, mlp=8)
    with pytest.raises(ValueError, match="unknown SELECTION size"):
        get_size("huge")
    with pytest.raises(ValueError, match="fusion"):
        SelectionModel("tiny", fusion="late")  # type: ignore[arg-type]


@pytest.mark.parametrize("fusion", ["paper", "image_only"])
def test_matches_naive_reference(fusion: str) -> None:
    cfg = get_size("tiny")
    model = init_random(SelectionModel(cfg, fusion=fusion), seed=3).eval()  # type: ignore[arg-type]
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    inp = example_inputs(cfg, 2, seed=5)
    with torch.no_grad():
        ours = model(*inp.values())
        ref = reference_forward(sd, cfg, fusion, inp)
    assert ours.shape == (2, 1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("fusion", "tokens"), [("paper", 414), ("image_only", 394)])
def test_token_count_before_pooling(fusion: str, tokens: int) -> None:
    model = init_random(SelectionModel("tiny", fusion=fusion), seed=1).eval()  # type: ignore[arg-type]
    seen: list[tuple[int, ...]] = []
    model.transformer.encoder.encoder_norm.register_forward_hook(
        lambda _m, _i, out: seen.append(tuple(out.shape))
    )
    with torch.no_grad():
        model(*example_inputs(model.size, 2).values())
    assert seen == [(2, tokens, model.size.hidden)]


def _score(model: SelectionModel, inp: dict[str, Tensor]) -> Tensor:
    with torch.no_grad():
        return torch.sigmoid(model(*inp.values()))


@pytest.mark.parametrize("group", ["lab", "demo", "iv"])
def test_paper_fusion_uses_every_clinical_group(group: str) -> None:
    model = init_random(SelectionModel("tiny"), seed=2).eval()
    inp = example_inputs(model.size, 2, seed=7)
    changed = {**inp, group: inp[group].clone()}
    changed[group][:, 0] += 1.5
    diff = (_score(model, changed) - _score(model, inp)).abs()
    assert float(diff.min()) > 1e-6


def test_image_only_ignores_clinical_but_not_images() -> None:
    model = init_random(SelectionModel("tiny", fusion="image_only"), seed=2).eval()
    inp = example_inputs(model.size, 2, seed=7)
    clinical = {**inp, **{g: inp[g] + 3.0 for g in ("lab", "demo", "iv")}}
    torch.testing.assert_close(_score(model, clinical), _score(model, inp), rtol=0, atol=0)
    image = {**inp, "portal": inp["portal"].flip(-1)}
    assert float((_score(model, image) - _score(model, inp)).abs().max()) > 1e-6


def test_same_weights_in_both_modes_give_different_scores() -> None:
    paper = init_random(SelectionModel("tiny"), seed=4).eval()
    public = SelectionModel("tiny", fusion="image_only").eval()
    public.load_state_dict(paper.state_dict(), strict=True)
    inp = example_inputs(paper.size, 1, seed=1)
    assert not torch.allclose(_score(paper, inp), _score(public, inp))


def test_batch_equals_per_sample() -> None:
    model = init_random(SelectionModel("tiny"), seed=6).eval()
    inp = example_inputs(model.size, 3, seed=8)
    batched = _score(model, inp)
    singles = torch.cat([_score(model, {k: v[i:i + 1] for k, v in inp.items()})
                         for i in range(3)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-6)


def test_authors_grouped_shape_accepted() -> None:
    """The authors feed clinical groups as (B, 1, n); (B, n) must give the same result."""
    model = init_random(SelectionModel("tiny"), seed=9).eval()
    inp = example_inputs(model.size, 2, seed=2)
    grouped = {k: (v[:, None, :] if v.dim() == 2 else v) for k, v in inp.items()}
    torch.testing.assert_close(_score(model, grouped), _score(model, inp))
