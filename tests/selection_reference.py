"""Facts-file restatements used by the SELECTION tests (needs torch; imported by
export-marked test modules only): the authors' checkpoint keys and a naive forward pass."""

from __future__ import annotations

import math

import torch

from hccatom.export.selection_model import SelectionSize

Tensor = torch.Tensor


def authors_keys(cfg: SelectionSize) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the authors' state dict, written out from the facts file."""
    h, m, p = cfg.hidden, cfg.mlp, cfg.patch
    n_tok = 1 + cfg.patches_per_phase
    keys: dict[str, tuple[int, ...]] = {}
    e = "transformer.embeddings."
    for phase in ("art", "port"):
        keys[f"{e}{phase}_patch_embeddings.weight"] = (h, 3, p, p)
        keys[f"{e}{phase}_patch_embeddings.bias"] = (h,)
        keys[f"{e}{phase}_position_embeddings"] = (1, n_tok, h)
    for name, n in (("lab", cfg.n_lab), ("sex", cfg.n_demo), ("age", cfg.n_iv)):
        keys[f"{e}{name}_embeddings.weight"] = (h, n)
        keys[f"{e}{name}_embeddings.bias"] = (h,)
        keys[f"{e}pe_{name}"] = (1, n, h)
    keys[f"{e}cls_token"] = (1, 1, h)

    def linear(prefix: str, n_out: int, n_in: int) -> None:
        keys[f"{prefix}.weight"] = (n_out, n_in)
        keys[f"{prefix}.bias"] = (n_out,)

    def norm(prefix: str) -> None:
        keys[f"{prefix}.weight"] = (h,)
        keys[f"{prefix}.bias"] = (h,)

    for i in range(cfg.layers):
        b = f"transformer.encoder.layer.{i}."
        norm(b + "attention_norm")
        norm(b + "ffn_norm")
        linear(b + "ffn.fc1", m, h)
        linear(b + "ffn.fc2", h, m)
        for name in ("query", "key", "value", "out"):
            linear(f"{b}attn.{name}", h, h)
        if i < cfg.multimodal_layers:
            norm(b + "att_norm_text")
            norm(b + "ffn_norm_text")
            linear(b + "ffn_text.fc1", m, h)
            linear(b + "ffn_text.fc2", h, m)
            for name in ("query_text", "key_text", "value_text", "out_text"):
                linear(f"{b}attn.{name}", h, h)
    norm("transformer.encoder.encoder_norm")
    linear("head", cfg.num_classes, h)
    return keys


# --- a naive reference written from the facts file ----------------------------------------
def _ln(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-6) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _lin(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _heads(x: Tensor, n: int) -> Tensor:
    b, t, h = x.shape
    return x.reshape(b, t, n, h // n).permute(0, 2, 1, 3)


def _ctx(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    out = att @ v
    b, n, t, d = out.shape
    return out.permute(0, 2, 1, 3).reshape(b, t, n * d)


def _mlp(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    return _lin(torch.nn.functional.gelu(_lin(x, sd, f"{name}.fc1")), sd, f"{name}.fc2")


def reference_forward(
    sd: dict[str, Tensor], cfg: SelectionSize, fusion: str, inp: dict[str, Tensor]
) -> Tensor:
    """Naive SELECTION forward from the state dict, following the facts file literally."""
    e = "transformer.embeddings."
    b = inp["arterial"].shape[0]
    cls = sd[f"{e}cls_token"].expand(b, 1, cfg.hidden)
    phases = []
    for phase, key in (("art", "arterial"), ("port", "portal")):
        conv = torch.nn.functional.conv2d(
            inp[key], sd[f"{e}{phase}_patch_embeddings.weight"],
            sd[f"{e}{phase}_patch_embeddings.bias"], stride=cfg.patch,
        )
        tokens = conv.flatten(2).transpose(1, 2)
        phases.append(torch.cat([cls, tokens], 1) + sd[f"{e}{phase}_position_embeddings"])
    img = torch.cat(phases, 1)
    groups = []
    for name, key in (("lab", "lab"), ("sex", "demo"), ("age", "iv")):
        vec = _lin(inp[key][:, None, :], sd, f"{e}{name}_embeddings")  # (B, 1, H)
        groups.append(vec + sd[f"{e}pe_{name}"])
    txt = torch.cat(groups, 1)
    n = cfg.heads
    for i in range(cfg.layers):
        p = f"transformer.encoder.layer.{i}."
        mm = fusion == "paper" and i < cfg.multimodal_layers
        if fusion == "paper" and i == cfg.multimodal_layers:
            img = torch.cat([img, txt], 1)
        if mm:
            xi, xt = _ln(img, sd, p + "attention_norm"), _ln(txt, sd, p + "att_norm_text")
            qi, ki, vi = (
                _heads(_lin(xi, sd, f"{p}attn.{k}"), n) for k in ("query", "key", "value")
            )
            qt, kt, vt = (
                _heads(_lin(xt, sd, f"{p}attn.{k}_text"), n) for k in ("query", "key", "value")
            )
            img = img + _lin((_ctx(qi, ki, vi) + _ctx(qi, kt, vt)) / 2, sd, p + "attn.out")
            txt = txt + _lin((_ctx(qt, kt, vt) + _ctx(qt, ki, vi)) / 2, sd, p + "attn.out")
            img = img + _mlp(_ln(img, sd, p + "ffn_norm"), sd, p + "ffn")
            txt = txt + _mlp(_ln(txt, sd, p + "ffn_norm_text"), sd, p + "ffn_text")
        else:
            x = _ln(img, sd, p + "attention_norm")
            q, k, v = (_heads(_lin(x, sd, f"{p}attn.{k}"), n) for k in ("query", "key", "value"))
            img = img + _lin(_ctx(q, k, v), sd, p + "attn.out")
            img = img + _mlp(_ln(img, sd, p + "ffn_norm"), sd, p + "ffn")
    enc = _ln(img, sd, "transformer.encoder.encoder_norm")
    return _lin(enc.mean(1), sd, "head")
