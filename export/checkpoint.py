"""Load SELECTION checkpoints strictly (build time only).

Accepts what the authors' training code saves: a plain state dict, usually with the
``module.`` prefix of ``DataParallel``, possibly wrapped in ``{"state_dict": ...}`` or
``{"model": ...}``; as ``.pth``/``.pt``/``.bin`` (read with ``torch.load(weights_only=True)``,
never unpickling arbitrary objects) or ``.safetensors``.

Unlike the authors' loader, which keeps random weights for missing keys, loading here is
strict: every parameter must come from the checkpoint with the right shape, and nothing may
be left over. Problems are reported by key name and size; a mismatch that points at another
network size says which one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from hccatom.errors import CheckpointError
from hccatom.export.selection_model import SIZES, Fusion, SelectionModel

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
PREFIXES = ("module.",)
MAX_LISTED = 12


def _shape(t: Tensor | torch.Size | tuple[int, ...]) -> str:
    dims = tuple(t.shape) if isinstance(t, Tensor) else tuple(t)
    return "x".join(str(d) for d in dims) if dims else "scalar"


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict (prefixes stripped)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    suffix = path.suffix.lower()
    raw: object
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"cannot read {path.name} as safetensors: {exc}") from exc
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"cannot read {path.name} with torch.load(weights_only=True): {exc}. "
                "Only tensors and plain containers are accepted (no pickled objects); "
                "re-save the state dict with torch.save(model.state_dict(), ...) or as "
                ".safetensors"
            ) from exc
    else:
        raise CheckpointError(
            f"unsupported checkpoint type {suffix!r} ({path.name}); use .pth, .pt or "
            ".safetensors"
        )
    return normalise_state_dict(raw, source=path.name)


def normalise_state_dict(raw: object, source: str = "checkpoint") -> dict[str, Tensor]:
    """Unwrap ``state_dict``/``model`` containers and strip ``module.`` prefixes."""
    obj = raw
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if isinstance(obj, Mapping) and not _looks_like_state_dict(obj):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _looks_like_state_dict(obj):
        keys = sorted(map(str, obj))[:MAX_LISTED] if isinstance(obj, Mapping) else []
        raise CheckpointError(
            f"{source} holds no state dict of tensors (top-level keys: {keys or type(obj)}); "
            f"expected a state dict, or one wrapped under one of {WRAPPER_KEYS}"
        )
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            kind = type(value).__name__
            raise CheckpointError(f"{source}: entry {key!r} is {kind}, not a tensor")
        name = str(key)
        for prefix in PREFIXES:
            while name.startswith(prefix):
                name = name[len(prefix):]
        if name in out:
            raise CheckpointError(f"{source}: key {name!r} appears twice once prefixes are removed")
        out[name] = value
    return out


def _looks_like_state_dict(obj: Mapping[object, object]) -> bool:
    return bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def size_numbers(state: Mapping[str, Tensor]) -> tuple[int | None, int | None, int | None]:
    """(hidden, layers, MLP) read from a state dict's shapes (None where not present)."""
    cls = state.get("transformer.embeddings.cls_token")
    head = state.get("head.weight")
    hidden = int(cls.shape[-1]) if cls is not None else (
        int(head.shape[-1]) if head is not None and head.dim() == 2 else None
    )
    layer_ids = {
        int(m.group(1))
        for k in state
        if (m := re.match(r"transformer\.encoder\.layer\.(\d+)\.", k))
    }
    layers = max(layer_ids) + 1 if layer_ids else None
    fc1 = state.get("transformer.encoder.layer.0.ffn.fc1.weight")
    mlp = int(fc1.shape[0]) if fc1 is not None and fc1.dim() == 2 else None
    return hidden, layers, mlp


def describe_size(state: Mapping[str, Tensor]) -> str | None:
    """Which network size a state dict looks like: a named size, or its numbers."""
    hidden, layers, mlp = size_numbers(state)
    if hidden is None and layers is None:
        return None
    for name, size in SIZES.items():
        if (size.hidden, size.layers, size.mlp) == (hidden, layers, mlp):
            return f"size {name!r} (hidden {hidden}, {layers} layers, MLP {mlp})"
    return f"hidden {hidden}, {layers} layers, MLP {mlp} (no named size matches)"


def _listing(items: list[str]) -> str:
    shown = items[:MAX_LISTED]
    more = len(items) - len(shown)
    return "; ".join(shown) + (f"; ... and {more} more" if more else "")


def check_state_dict(
    model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint"
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the model's keys and shapes."""
    want = model.state_dict()
    missing = [f"{k} ({_shape(v)})" for k, v in want.items() if k not in state]
    unexpected = [f"{k} ({_shape(v)})" for k, v in state.items() if k not in want]
    wrong = [
        f"{k}: checkpoint {_shape(state[k])}, model {_shape(v)}"
        for k, v in want.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or wrong):
        return
    size = getattr(model, "size", None)
    what = f"SELECTION size {size.name!r}" if size is not None else type(model).__name__
    parts = [f"{source} does not match {what}."]
    looks = describe_size(state)
    other = size is not None and size_numbers(state) != (size.hidden, size.layers, size.mlp)
    if looks and other and size is not None:
        parts.append(f"The checkpoint looks like {looks}; the model is size {size.name!r} "
                     f"(hidden {size.hidden}, {size.layers} layers, MLP {size.mlp}).")
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listing(missing)}.")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}.")
    if wrong:
        parts.append(f"{len(wrong)} wrongly shaped key(s): {_listing(wrong)}.")
    parts.append("Nothing was loaded; pass the size the checkpoint was trained with.")
    raise CheckpointError(" ".join(parts))


def load_into(
    model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint"
) -> nn.Module:
    """Check ``state`` strictly, then copy it into ``model`` (dtypes cast to the model's)."""
    check_state_dict(model, state, source)
    model.load_state_dict(dict(state), strict=True)
    return model


def load_selection(
    checkpoint: str | Path | Mapping[str, Tensor],
    size: str = "paper",
    fusion: Fusion = "paper",
) -> SelectionModel:
    """Build a :class:`SelectionModel` and load ``checkpoint`` (path or state dict) strictly.

    The fusion mode cannot be read from a checkpoint (both modes share parameter names): it
    must be stated when the checkpoint was trained with the public code's image-only path.
    """
    model = SelectionModel(size, fusion=fusion)
    if isinstance(checkpoint, Mapping):
        state = normalise_state_dict(checkpoint)
        source = "state dict"
    else:
        state = read_checkpoint(checkpoint)
        source = Path(checkpoint).name
    load_into(model, state, source)
    return model.eval()
