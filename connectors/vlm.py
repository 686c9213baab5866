"""The continuous-track model: vision features -> resampler -> view encoding -> projector -> LLM input embeddings.

Tiles add the view encoding of their yaw/pitch and go through `projector`; the global view (no direction)
gets no view encoding and goes through its own `global_projector` of the same shape, as in the panorama
recipe. `tower_top`, set by the training stages that tune the vision tower's last layers, maps the cached
hidden states in `ViewFeatures.features` to the tower's features first (`uti.image.vision.TowerTop`).

Projected vectors replace the `<|image_patch|>` placeholder embeddings in the LLM's `inputs_embeds`; the
LLM itself is unchanged (frozen, but for LoRA in stage `finetune`) and only ever predicts text IDs.

Embeddings of the image specials: in the token space their IDs are >= the base vocabulary, so the LLM
has no rows for them. Rather than growing the LLM's matrix (as the token LM does for a whole range of
image codes), this track keeps two small trainable rows of its own, for `<|image_start|>` and
`<|image_end|>`; the patch placeholder needs no row because it is always replaced. They are saved with
the connector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from uti.errors import TokenRangeError

from .errors import PlaceholderCountError, WidthMismatchError
from .inject import ImageTokenIds, ViewFeatures
from .projector import MLPProjector
from .registry import build_resampler
from .view_pos import ViewPositionEncoding

__all__ = ["ConnectorConfig", "Connector", "ContinuousVLM", "add_lora", "generate_text"]


@dataclass
class ConnectorConfig:
    """Connector sizes: `resampler` name + its config keys, the LLM width, projector hidden (None = 4 x width)."""

    llm_width: int
    resampler: str = "perceiver"
    resampler_cfg: dict[str, Any] = field(default_factory=dict)
    projector_hidden: int | None = None
    view_freqs: int = 4

    def __post_init__(self) -> None:
        if self.llm_width < 1 or self.view_freqs < 1:
            raise ValueError(f"llm_width and view_freqs must be >= 1, got {self.llm_width}, {self.view_freqs}")


class Connector(nn.Module):
    """Everything the continuous track trains besides LoRA: resampler, view encoding, projector, special rows."""

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__()
        self.config = config
        self.resampler = build_resampler(config.resampler, **config.resampler_cfg)
        self.view_pos = ViewPositionEncoding(self.resampler.out_dim, config.view_freqs)
        self.projector = MLPProjector(self.resampler.out_dim, config.llm_width, config.projector_hidden)
        self.global_projector = MLPProjector(self.resampler.out_dim, config.llm_width, config.projector_hidden)
        self.special_rows = nn.Parameter(torch.empty(2, config.llm_width))  # (2, width): start, end
        if not self.special_rows.is_meta:
            nn.init.normal_(self.special_rows, std=0.02)

    @property
    def in_dim(self) -> int:
        return int(self.resampler.in_dim)

    def tokens_per_image(self, num_views: int) -> int:
        """How many `<|image_patch|>` placeholders an image with `num_views` views needs."""
        return num_views * int(self.resampler.num_tokens)

    def forward(self, images: Sequence[ViewFeatures]) -> torch.Tensor:
        """Images in order -> (sum of tokens_per_image, llm_width): each image's views, view by view."""
        if not images:
            return self.special_rows.new_zeros(0, self.config.llm_width)
        for img in images:
            if img.features.shape[-1] != self.in_dim:
                raise WidthMismatchError(
                    f"vision features are {img.features.shape[-1]} wide but the connector expects {self.in_dim}; "
                    "use a connector trained for this vision tower"
                )
        dev, dtype = self.special_rows.device, self.special_rows.dtype
        if len({img.features.shape[1] for img in images}) == 1:  # one batch of all views: (sum V, T, in_dim)
            lat = self.resampler(torch.cat([img.features for img in images]).to(dev, dtype))  # (sum V, L, dim)
        else:  # different patch counts per image: run the resampler image by image
            lat = torch.cat([self.resampler(img.features.to(dev, dtype)) for img in images])
        yaw_pitch = torch.cat([img.yaw_pitch for img in images]).to(lat.device)  # (sum V, 2)
        is_global = torch.cat([img.is_global for img in images]).to(lat.device)  # (sum V,)
        tiles, glob = (~is_global).nonzero()[:, 0], is_global.nonzero()[:, 0]
        # both projectors always run (one on zero views if need be), so DDP sees every parameter used
        pos = self.view_pos(yaw_pitch[tiles]).to(lat.dtype)[:, None, :]  # (tiles, 1, dim)
        out = lat.new_empty(lat.shape[0], lat.shape[1], self.config.llm_width)  # (sum V, L, width)
        out = out.index_put((tiles,), self.projector(lat[tiles] + pos))
        out = out.index_put((glob,), self.global_projector(lat[glob]))
        return out.reshape(-1, self.config.llm_width)  # (sum V * L, width)


class ContinuousVLM(nn.Module):
    """A causal LLM (Qwen3 or any HF CausalLM) fed image vectors through `inputs_embeds`."""

    def __init__(self, llm: nn.Module, connector: Connector, ids: ImageTokenIds) -> None:
        super().__init__()
        width = llm.get_input_embeddings().embedding_dim
        if width != connector.config.llm_width:
            raise WidthMismatchError(
                f"connector projects to width {connector.config.llm_width} but the LLM's hidden size is {width}; "
                "build the connector with llm_width equal to the LLM's hidden_size"
            )
        rows = llm.get_input_embeddings().num_embeddings
        if ids.base_vocab_size > rows:
            raise WidthMismatchError(
                f"token space's base vocabulary ({ids.base_vocab_size}) exceeds the LLM's {rows} embedding rows; "
                "use the base model the token space was built for"
            )
        self.llm, self.connector, self.ids = llm, connector, ids
        self.lora: dict[str, Any] | None = None  # LoRA settings once `add_lora` ran (stage finetune)
        self.tower_top: nn.Module | None = None  # the tower's tuned last layers in training (`VisionTower.top`)
        for p in self.llm.parameters():
            p.requires_grad_(False)

    def tune(self, images: Sequence[ViewFeatures]) -> list[ViewFeatures]:
        """The images with `tower_top` applied to their features (hidden states -> tower features); as given
        without a `tower_top`. Each image: features (V, P, D) -> (V, P, D)."""
        if self.tower_top is None:
            return list(images)
        return [ViewFeatures(self.tower_top(img.features), img.yaw_pitch, img.is_global, img.pairs) for img in images]

    def tokens_per_image(self, num_views: int) -> int:
        return self.connector.tokens_per_image(num_views)

    def _check_counts(self, input_ids: torch.Tensor, images: Sequence[ViewFeatures]) -> None:
        starts = (input_ids == self.ids.start).sum().item()
        if starts != len(images):
            raise PlaceholderCountError(
                f"batch has {starts} <|image_start|> token(s) but {len(images)} image(s) were given; "
                "expand each <image> with expand_image_placeholders"
            )
        want = sum(self.tokens_per_image(img.num_views) for img in images)
        got = (input_ids == self.ids.patch).sum().item()
        if got != want:
            raise PlaceholderCountError(
                f"batch has {got} <|image_patch|> placeholder(s) but the images give {want} vectors "
                f"({self.connector.resampler.num_tokens} per view); expand each <image> with expand_image_placeholders"
            )

    def embed(self, input_ids: torch.Tensor, images: Sequence[ViewFeatures], tuned: bool = False) -> torch.Tensor:
        """input_ids: (B, S) global IDs; images in reading order (row by row) -> inputs_embeds (B, S, width).

        `tuned`: the images already went through `tune` (else it is applied here)."""
        ids = self.ids
        self._check_counts(input_ids, images)
        is_text = input_ids < ids.base_vocab_size
        known = is_text | (input_ids == ids.start) | (input_ids == ids.end) | (input_ids == ids.patch)
        if not bool(known.all()):
            bad = input_ids[~known][0].item()
            raise TokenRangeError(
                f"ID {bad} is neither a text ID (< {ids.base_vocab_size}) nor an image special of the continuous "
                "track; the continuous track takes text and <image> placeholders only"
            )
        emb = self.llm.get_input_embeddings()(torch.where(is_text, input_ids, 0))  # (B, S, width)
        rows = self.connector.special_rows.to(emb.dtype)
        emb = torch.where((input_ids == ids.start)[..., None], rows[0], emb)
        emb = torch.where((input_ids == ids.end)[..., None], rows[1], emb)
        vectors = self.connector(images if tuned else self.tune(images)).to(emb.dtype)  # (P, width) in reading order
        return emb.masked_scatter((input_ids == ids.patch)[..., None], vectors)

    def forward(
        self,
        input_ids: torch.Tensor,
        images: Sequence[ViewFeatures],
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        tuned: bool = False,
    ) -> Any:
        """The LLM's output (with `.loss` when `labels` (B, S) are given; -100 = ignored)."""
        emb = self.embed(input_ids, images, tuned)
        return self.llm(inputs_embeds=emb, attention_mask=attention_mask, labels=labels)

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, images: Sequence[ViewFeatures], attention_mask: torch.Tensor | None = None,
        **gen_kwargs: Any,
    ) -> torch.Tensor:
        """New text IDs (B, new) continuing `input_ids` (B, S) with images; kwargs go to `llm.generate`."""
        emb = self.embed(input_ids, images)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        return self.llm.generate(inputs_embeds=emb, attention_mask=attention_mask, **gen_kwargs)


def add_lora(vlm: ContinuousVLM, r: int = 8, alpha: int = 16, dropout: float = 0.0,
             target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> dict[str, Any]:
    """Stage `finetune`: wrap the LLM with peft LoRA adapters (only they train in the LLM). Returns the LoRA settings."""
    from peft import LoraConfig, get_peft_model

    settings = {"r": int(r), "alpha": int(alpha), "dropout": float(dropout), "target_modules": list(target_modules)}
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    vlm.llm = get_peft_model(vlm.llm, config)
    vlm.lora = settings
    return settings


def generate_text(
    vlm: ContinuousVLM, prompt: str, images: Sequence[ViewFeatures], encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str], max_new_tokens: int = 32, **gen_kwargs: Any,
) -> str:
    """Text the model writes after `prompt` (one `<image>` per image), e.g. a caption of a panorama."""
    from .inject import expand_image_placeholders

    n = [vlm.tokens_per_image(img.num_views) for img in images]
    device = next(vlm.parameters()).device
    ids = torch.tensor([expand_image_placeholders(prompt, encode, vlm.ids, n)], device=device)
    gen_kwargs.setdefault("do_sample", False)
    new = vlm.generate(ids, images, max_new_tokens=max_new_tokens, **gen_kwargs)  # (1, new)
    return decode(new[0].tolist())
