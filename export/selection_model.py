"""SELECTION in PyTorch (build time only): the paper's network, laid out as below.

Two CT phases (arterial, portal) become 197 tokens each (shared class token + 196 patches,
each phase with its own position embedding); three clinical groups (lab 8, demo 6, IV 6)
become 20 tokens. Two bidirectional multimodal blocks let image and clinical tokens attend
to each other; then (``fusion="paper"``, the default, as in the paper and IRENE) both token
sets are concatenated and the remaining blocks are plain self-attention over all 414
tokens. A final LayerNorm, the mean over tokens and a linear head give the logit.

``fusion="image_only"`` reproduces the authors' public training code, whose encoder calls
every block on the image tokens only: clinical inputs then have no effect. It exists for
checkpoints trained that way and is never the default.

Module and parameter names follow the authors' checkpoints
(``transformer.embeddings.*``, ``transformer.encoder.layer.{i}.*``,
``transformer.encoder.encoder_norm``, ``head``) so their state dicts load unchanged.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.functional import gelu, scaled_dot_product_attention

# Sizes and fusion modes live in a torch-free module (the CLI help lists them); re-exported.
from hccatom.export.selection_sizes import FUSIONS as FUSIONS
from hccatom.export.selection_sizes import SIZES as SIZES
from hccatom.export.selection_sizes import Fusion as Fusion
from hccatom.export.selection_sizes import SelectionSize as SelectionSize
from hccatom.export.selection_sizes import get_size as get_size

LN_EPS = 1e-6


class Embeddings(nn.Module):
    """Patch, position and clinical-group embeddings (authors' attribute names)."""

    def __init__(self, cfg: SelectionSize) -> None:
        super().__init__()
        h, p = cfg.hidden, cfg.patch
        n_tok = 1 + cfg.patches_per_phase
        self.art_patch_embeddings = nn.Conv2d(3, h, kernel_size=p, stride=p)
        self.port_patch_embeddings = nn.Conv2d(3, h, kernel_size=p, stride=p)
        # Historical names: sex_embeddings embeds the demo group, age_embeddings the IV group.
        self.lab_embeddings = nn.Linear(cfg.n_lab, h)
        self.sex_embeddings = nn.Linear(cfg.n_demo, h)
        self.age_embeddings = nn.Linear(cfg.n_iv, h)
        self.art_position_embeddings = nn.Parameter(torch.zeros(1, n_tok, h))
        self.port_position_embeddings = nn.Parameter(torch.zeros(1, n_tok, h))
        self.pe_lab = nn.Parameter(torch.zeros(1, cfg.n_lab, h))
        self.pe_sex = nn.Parameter(torch.zeros(1, cfg.n_demo, h))
        self.pe_age = nn.Parameter(torch.zeros(1, cfg.n_iv, h))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, h))

    def _phase(self, image: Tensor, conv: nn.Conv2d, pos: Tensor) -> Tensor:
        tokens = conv(image).flatten(2).transpose(1, 2)  # (B, 196, H)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat((cls, tokens), dim=1) + pos

    def forward(
        self, arterial: Tensor, portal: Tensor, lab: Tensor, demo: Tensor, iv: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Image tokens (B, 394, H) and clinical tokens (B, 20, H).

        Clinical groups are (B, n) or the authors' (B, 1, n); each is embedded to one
        (B, 1, H) vector and broadcast-added to its (1, n, H) position embedding.
        """
        image = torch.cat(
            (
                self._phase(arterial, self.art_patch_embeddings, self.art_position_embeddings),
                self._phase(portal, self.port_patch_embeddings, self.port_position_embeddings),
            ),
            dim=1,
        )
        groups = []
        for values, linear, pos in (
            (lab, self.lab_embeddings, self.pe_lab),
            (demo, self.sex_embeddings, self.pe_sex),
            (iv, self.age_embeddings, self.pe_age),
        ):
            v = values if values.dim() == 3 else values.unsqueeze(1)
            groups.append(linear(v) + pos)
        return image, torch.cat(groups, dim=1)


class Mlp(nn.Module):
    """fc1 -> GELU (erf) -> fc2."""

    def __init__(self, cfg: SelectionSize) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden, cfg.mlp)
        self.fc2 = nn.Linear(cfg.mlp, cfg.hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(gelu(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention; with ``multimodal`` also clinical q/k/v and cross attention."""

    def __init__(self, cfg: SelectionSize, multimodal: bool) -> None:
        super().__init__()
        h = cfg.hidden
        self.heads = cfg.heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.out = nn.Linear(h, h)
        self.multimodal = multimodal
        if multimodal:
            self.query_text = nn.Linear(h, h)
            self.key_text = nn.Linear(h, h)
            self.value_text = nn.Linear(h, h)
            # Present in the authors' checkpoints but unused by their forward pass: both
            # streams go through ``out``. Kept so that their state dicts load strictly.
            self.out_text = nn.Linear(h, h)

    def _split(self, x: Tensor) -> Tensor:
        b, n, h = x.shape
        return x.view(b, n, self.heads, h // self.heads).transpose(1, 2)

    @staticmethod
    def _merge(x: Tensor) -> Tensor:
        b, heads, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, heads * d)

    def forward(self, x: Tensor) -> Tensor:
        """Plain self-attention over ``x`` (B, N, H)."""
        q, k, v = (self._split(f(x)) for f in (self.query, self.key, self.value))
        return self.out(self._merge(scaled_dot_product_attention(q, k, v)))

    def forward_multimodal(self, x: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Bidirectional attention: four maps (img->img, text->text, img->text, text->img);
        each stream's context is the mean of its self and cross contexts, then ``out``."""
        qi, ki, vi = (self._split(f(x)) for f in (self.query, self.key, self.value))
        qt, kt, vt = (
            self._split(f(text)) for f in (self.query_text, self.key_text, self.value_text)
        )
        sdpa = scaled_dot_product_attention
        ctx_img = (sdpa(qi, ki, vi) + sdpa(qi, kt, vt)) / 2
        ctx_text = (sdpa(qt, kt, vt) + sdpa(qt, ki, vi)) / 2
        return self.out(self._merge(ctx_img)), self.out(self._merge(ctx_text))


class Block(nn.Module):
    """Pre-norm transformer block; multimodal blocks carry a second (clinical) stream."""

    def __init__(self, cfg: SelectionSize, multimodal: bool) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(cfg.hidden, eps=LN_EPS)
        self.ffn_norm = nn.LayerNorm(cfg.hidden, eps=LN_EPS)
        self.ffn = Mlp(cfg)
        self.attn = Attention(cfg, multimodal)
        if multimodal:
            self.att_norm_text = nn.LayerNorm(cfg.hidden, eps=LN_EPS)
            self.ffn_norm_text = nn.LayerNorm(cfg.hidden, eps=LN_EPS)
            self.ffn_text = Mlp(cfg)

    def forward(self, x: Tensor) -> Tensor:
        """Plain path (image stream only, or all tokens after concatenation)."""
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))

    def forward_multimodal(self, x: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Both streams, each with its own norms and MLP, sharing the attention."""
        a_img, a_text = self.attn.forward_multimodal(
            self.attention_norm(x), self.att_norm_text(text)
        )
        x, text = x + a_img, text + a_text
        x = x + self.ffn(self.ffn_norm(x))
        text = text + self.ffn_text(self.ffn_norm_text(text))
        return x, text


class Encoder(nn.Module):
    """``layers`` blocks (the first ``multimodal_layers`` multimodal) and ``encoder_norm``."""

    def __init__(self, cfg: SelectionSize, fusion: Fusion) -> None:
        super().__init__()
        self.fusion = fusion
        self.n_multimodal = cfg.multimodal_layers
        self.layer = nn.ModuleList(
            Block(cfg, multimodal=i < cfg.multimodal_layers) for i in range(cfg.layers)
        )
        self.encoder_norm = nn.LayerNorm(cfg.hidden, eps=LN_EPS)

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        x = image
        if self.fusion == "image_only":
            for layer in self.layer:
                x = layer(x)
        else:
            for i, module in enumerate(self.layer):
                block = cast(Block, module)
                if i < self.n_multimodal:
                    x, text = block.forward_multimodal(x, text)
                else:
                    if i == self.n_multimodal:
                        x = torch.cat((x, text), dim=1)
                    x = block(x)
        return self.encoder_norm(x)


class Transformer(nn.Module):
    """Embeddings + encoder (the authors' ``transformer`` sub-module)."""

    def __init__(self, cfg: SelectionSize, fusion: Fusion) -> None:
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg, fusion)

    def forward(
        self, arterial: Tensor, portal: Tensor, lab: Tensor, demo: Tensor, iv: Tensor
    ) -> Tensor:
        image, text = self.embeddings(arterial, portal, lab, demo, iv)
        return self.encoder(image, text)


class SelectionModel(nn.Module):
    """One SELECTION network: CT phases + clinical groups -> logit(s) (B, num_classes)."""

    def __init__(self, size: str | SelectionSize = "paper", fusion: Fusion = "paper") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")
        self.size = get_size(size)
        self.fusion: Fusion = fusion
        self.transformer = Transformer(self.size, fusion)
        self.head = nn.Linear(self.size.hidden, self.size.num_classes)

    def forward(
        self, arterial: Tensor, portal: Tensor, lab: Tensor, demo: Tensor, iv: Tensor
    ) -> Tensor:
        """Logits (B, num_classes): head(mean over tokens of the normed encoder output)."""
        encoded = self.transformer(arterial, portal, lab, demo, iv)
        return self.head(encoded.mean(dim=1))


def init_random(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Fill every parameter with seeded random values (tests, demos, benchmarks).

    Position embeddings and the class token start at zero in a fresh model; random values
    make sure every parameter, and so every wrong mapping, shows in the output.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_text.weight")):
                p.copy_(1.0 + std * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))
    return model
