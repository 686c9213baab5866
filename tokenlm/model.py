"""Grow a Hugging Face causal LM (Qwen3) to a token space, initialise the new rows, and set training stages.

`grow_model` swaps the input embedding and LM head for `GrownEmbedding` / `GrownHead`: base rows stay
the very same frozen tensors (bit-identical), the space's new IDs `[V, padding.start)` get their own
rows, and padding IDs `[padding.start, total)` get none (zero embedding, `-inf` logit). New IDs start at
the base `config.vocab_size` V (for Qwen3 151936, larger than `len(tokenizer)`), which must equal the
space's `abi.text.base_vocab_size`.

New-row initialisation (`init=`):

* ``"mean_noise"`` (default, measured below): each new row is drawn from a diagonal Gaussian fitted to
  the base rows (per-dimension mean and `sigma` x per-dimension std), then rescaled to the median
  base-row norm. New rows start as distinct, typical-looking rows. (Hugging Face's mean-resizing draws
  from the mean with a 1e-5-scaled covariance, so all new rows start as near-identical copies and
  receive near-identical gradients; we avoid that on purpose.)
* ``"codebook"``: the rows of codes that a codec describes by vectors (`ModalityCodec.code_vectors`: the
  image codebook (K, Dc), pin-checked) come from those vectors: centred, mapped to the LM
  width by a fixed seeded random projection with orthonormal columns (distance-preserving when
  Dc <= D, Johnson-Lindenstrauss otherwise), scaled by one global factor and shifted to the base-row
  mean, the scale set so the RMS row norm equals the median base-row norm. The map is affine, so pairwise
  code distances stay proportional: nearby codes start as nearby rows. Specials and audio rows use
  ``"mean_noise"``.
* ``"projection"``: the same code vectors, mapped into the LM's embedding space by moment matching, a
  linear map fitted without paired data: the centred codes are whitened by PCA (unit variance along each
  of their r principal axes, r = the codebook's rank, at most D) and coloured with the base rows' r
  leading principal axes and standard deviations, then shifted to the base-row mean. The code rows then
  have the base rows' mean and, along those r axes, exactly their covariance: the codebook's dominant
  direction becomes the LM's dominant direction, and so on down the spectrum. Axis signs are fixed
  (largest entry positive) so the map is deterministic. When the codebook is already white and the base
  rows isotropic the map is a scaled rotation and code distances keep their ranks. (UniTok and Tar go
  further and build or project the codebook from LLM embeddings with paired training; this needs none.)
  Audio rows use ``"mean_noise"`` as with ``"codebook"``: the audio codec exposes no code vectors; any
  codec that does (`ModalityCodec.code_vectors`) gets the same treatment with no change here.
* ``"normal"``: N(0, config.initializer_range), the model's own init for fresh weights.

``"mean_noise"`` stays the default because it is what measured best: on the learning check
(scripts/learning_check.py, tiny space and its 64-code codebook, 200 rows steps, 5 seeds x 40 held-out
captions) the own image gave the lower caption loss in 0.935 of the cases under all three inits, and
``"mean_noise"`` had the lowest own-image loss (0.3886 vs 0.3893 ``"codebook"``, 0.3936 ``"projection"``)
and the largest own-vs-other gap (README, "New-row initialisation"). The differences are within seed
noise; none of the vector inits earned the codebook asset they need.

Untied heads get their own new rows, initialised the same way from the base head's statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from uti.errors import MissingAssetError, UTIError

from .rows import GrownEmbedding, GrownHead, chunked_cross_entropy

__all__ = [
    "GrowthError", "StageError", "STAGES", "INITS", "VECTOR_INITS", "load_base", "grow_model", "grown_modules",
    "growth_info", "code_vectors", "init_new_rows",
    "trainable_row_params", "apply_stage", "trained_parameter_names", "ChunkedLossLM",
]

STAGES = ("rows", "lora", "full")
INITS = ("mean_noise", "codebook", "projection", "normal")
VECTOR_INITS = ("codebook", "projection")  # the inits that start rows from code vectors
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class GrowthError(UTIError, ValueError):
    """The base model and the token space do not fit together (vocabulary size, layout, options)."""


class StageError(UTIError, ValueError):
    """Unknown training stage or a model not prepared for it."""


def load_base(name_or_path: str, dtype: str | torch.dtype = "float32", verbose: bool = False) -> nn.Module:
    """Load a causal LM by hub id or local directory with `AutoModelForCausalLM` (eval mode, no grads yet).

    transformers' weight-loading progress bars show only with `verbose`.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from pathlib import Path

    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if Path(name_or_path).is_dir() and not (Path(name_or_path) / "config.json").is_file():
        raise MissingAssetError(f"base model folder {name_or_path} has no config.json; give a Hugging Face model "
                                "folder (config.json + weights) or a hub id")
    bars = hf_logging.is_progress_bar_enabled()
    if not verbose:
        hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch_dtype)
    except (OSError, ValueError) as err:  # ValueError: a config.json that names no known model type
        raise MissingAssetError(f"cannot load base model {name_or_path!r}: {str(err).splitlines()[0][:200]} "
                                "(give a local directory or a cached hub id)") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model.eval()


def _median_norm(w: torch.Tensor) -> torch.Tensor:
    return w.norm(dim=1).median()


def _mean_noise_rows(w: torch.Tensor, n: int, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """(n, D) rows ~ N(mean(w), (sigma * std(w))^2) per dimension, rescaled to w's median row norm."""
    w = w.detach().float()
    mu, sd = w.mean(0), w.std(0)
    rows = mu + sigma * sd * torch.randn(n, w.shape[1], generator=gen)
    return rows * (_median_norm(w) / rows.norm(dim=1, keepdim=True).clamp_min(1e-12))


def _codebook_rows(w: torch.Tensor, codebook: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(K, D) rows from codebook (K, Dc): an affine, distance-preserving map into w's row space.

    Centred codes go through a fixed seeded projection with orthonormal columns (an isometry when
    Dc <= D), are scaled by one global factor and shifted to the base-row mean, with the factor chosen
    so the typical (RMS) row norm equals the median base-row norm. Pairwise distances stay proportional.
    """
    w = w.detach().float()
    x = codebook.detach().float()
    x = x - x.mean(0)
    dc, d = x.shape[1], w.shape[1]
    q, _ = torch.linalg.qr(torch.randn(max(dc, d), min(dc, d), generator=gen))  # orthonormal columns
    y = x @ (q if dc >= d else q.T)  # (K, D)
    mu, target = w.mean(0), _median_norm(w)
    spread = (target.square() - mu.square().sum()).clamp_min(1e-12 * target.square())
    scale = (spread / y.square().sum(1).mean().clamp_min(1e-12)).sqrt()
    return mu + scale * y


def _fix_signs(axes: torch.Tensor) -> torch.Tensor:
    """(r, d) axes, each flipped so its largest-magnitude entry is positive (SVD/eigh signs are arbitrary)."""
    return axes * torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))


def _code_coordinates(x: torch.Tensor) -> torch.Tensor:
    """(K, r) whitened principal coordinates of the codes x (K, Dc): unit variance along each of their r
    principal axes (r = numerical rank of the centred codes; float64 SVD, so a rank-deficient codebook
    gets no spurious noise axes)."""
    x = x.detach().double()
    x = x - x.mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    keep = s > s[0].clamp_min(1e-300) * max(x.shape) * torch.finfo(torch.float32).eps
    axes = _fix_signs(vh[keep])  # (r, Dc)
    return (x @ axes.T) / s[keep] * (len(x) - 1) ** 0.5  # (K, r), z.T @ z / (K - 1) = I


def _row_axes(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mean (D,), standard deviations (r,) and principal axes (r, D) of rows w (V, D), largest first, from
    the D x D covariance (cheap for a full vocabulary: one V x D x D product, no V x V factors)."""
    w = w.detach().float()
    mu = w.mean(0)
    c = w - mu
    var, vec = torch.linalg.eigh((c.T @ c).double() / max(len(w) - 1, 1))  # ascending
    var, axes = var.flip(0), vec.flip(1).T
    keep = var > var[0].clamp_min(1e-300) * 1e-7  # below this the float32 product is noise
    return mu.double(), var[keep].sqrt(), _fix_signs(axes[keep])


def _projection_rows(w: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(K, D) rows from codebook (K, Dc) by moment matching: PCA-whitened codes coloured with w's axes.

    Row i is mean(w) + sum_j z_ij * sd_j * a_j, where z (K, r) are the codes' whitened principal
    coordinates (unit variance), a_j the j-th principal axis of w and sd_j its standard deviation along it;
    r = min(rank of the codes, rank of w). The rows' mean is w's and their covariance is w's on those r axes.
    """
    z = _code_coordinates(codebook)  # (K, rc)
    mu, sd, axes = _row_axes(w)  # (D,), (rw,), (rw, D)
    r = min(z.shape[1], len(sd))
    return (mu + (z[:, :r] * sd[:r]) @ axes[:r]).float()


def code_vectors(space: Any) -> dict[str, torch.Tensor]:
    """{range name: (size, Dc) vectors} from every codec of the space that describes its codes by vectors
    (`ModalityCodec.code_vectors`: the image codebook), each asset pin-checked by its codec."""
    from uti.tokenizer import Tokenizer

    tok = Tokenizer(space)
    out: dict[str, torch.Tensor] = {}
    for modality in tok.modalities:
        out.update(tok.codec(modality).code_vectors())
    return out


def _vector_ranges(space: Any) -> list[str]:
    from uti.codecs import present_codecs

    return [r for c in present_codecs(space.abi) for r in c.vector_ranges(space.abi[c.modality])]


def init_new_rows(base_weight: torch.Tensor, space: Any, init: str, codebook: torch.Tensor | None,
                  sigma: float, seed: int) -> torch.Tensor:
    """(N, D) float32 initial rows for the space's new IDs, from the statistics of `base_weight` (V, D).

    `init="codebook"` or `"projection"`: the ranges whose codec has code vectors start from them (`codebook`,
    when given, are the vectors of the space's one such range; else `code_vectors(space)` loads them).
    """
    v = space.ranges["text"].stop
    n = space.ranges["padding"].start - v
    gen = torch.Generator().manual_seed(seed)
    if init == "normal":
        return torch.randn(n, base_weight.shape[1], generator=gen) * sigma
    rows = _mean_noise_rows(base_weight, n, sigma, gen)
    if init in VECTOR_INITS:
        names = _vector_ranges(space)
        if not names:
            raise GrowthError(f"init={init!r} needs a codec with code vectors (e.g. an image section); space "
                              f"{space.name!r} has none")
        if codebook is not None and len(names) != 1:
            raise GrowthError(f"codebook= gives the vectors of one range, but space {space.name!r} has several "
                              f"({', '.join(names)}); leave it out to load each codec's own")
        vectors = {names[0]: codebook} if codebook is not None else code_vectors(space)
        for name, cb in vectors.items():
            r = space.ranges[name]
            if cb.dim() != 2 or cb.shape[0] != len(r):
                raise GrowthError(f"codebook has shape {tuple(cb.shape)}, expected ({len(r)}, dim) for the {name} "
                                  "range")
            if not torch.isfinite(cb).all():
                raise GrowthError(f"codebook for the {name} range has NaN or infinite entries; give finite vectors")
            mapped = _codebook_rows(base_weight, cb, gen) if init == "codebook" else _projection_rows(base_weight, cb)
            rows[r.start - v:r.stop - v] = mapped
    return rows


def _check_fit(model: nn.Module, space: Any) -> int:
    v = int(model.config.vocab_size)
    expected = space.abi["text"]["base_vocab_size"]
    if v != expected:
        raise GrowthError(f"base model has config.vocab_size {v} but token space {space.name!r} ({space.hash}) was "
                          f"built for base_vocab_size {expected}; use the base model the space was built for")
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != v:
        raise GrowthError(f"base embedding has {rows} rows but config.vocab_size is {v}; refusing to guess")
    return v


def grow_model(model: nn.Module, space: Any, init: str = "mean_noise", codebook: torch.Tensor | None = None,
               sigma: float = 1.0, seed: int = 0) -> nn.Module:
    """Grow `model` (a HF causal LM, modified in place and returned) to `space`; see the module docstring.

    For `init="normal"`, `sigma` defaults to the config's initializer_range when left at 1.0.
    """
    if init not in INITS:
        raise GrowthError(f"unknown init {init!r}; expected one of {', '.join(INITS)}")
    if isinstance(model.get_input_embeddings(), GrownEmbedding):
        raise GrowthError("model is already grown; load a fresh base model")
    v = _check_fit(model, space)
    if init == "normal" and sigma == 1.0:
        sigma = float(getattr(model.config, "initializer_range", 0.02))
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    dtype = emb.weight.dtype
    num_pad = len(space.ranges["padding"])
    rows = init_new_rows(emb.weight, space, init, codebook, sigma, seed).to(dtype)
    grown_emb = GrownEmbedding(emb, nn.Parameter(rows), num_padding=num_pad)
    if tied:
        grown_head = GrownHead(grown_emb)
    else:
        head_rows = init_new_rows(head.weight, space, init, codebook, sigma, seed + 1).to(head.weight.dtype)
        grown_head = GrownHead(head, nn.Parameter(head_rows))
        grown_head.set_padding(num_pad)
    model.set_input_embeddings(grown_emb)
    model.set_output_embeddings(grown_head)
    # The grown head shares Parameters with the embedding itself; stop transformers from re-tying by name.
    # transformers (5.x) has no public switch for this besides config.tie_word_embeddings, which must keep
    # saying "tied" (checkpoints and the exported model record it); `_tied_weights_keys` is the per-model
    # declaration its tie_weights() reads, so the instance overrides it (export.merge_model drops the override).
    model._tied_weights_keys = None
    model.all_tied_weights_keys = {}
    model.config.vocab_size = space.total
    if hasattr(model, "vocab_size"):
        model.vocab_size = space.total
    model.tokenlm_growth = {
        "base_model": str(getattr(model.config, "_name_or_path", "") or ""),
        "base_vocab_size": v, "row_start": v, "row_end": space.ranges["padding"].start, "total": space.total,
        "tied": tied, "token_space_hash": space.hash, "init": init, "dtype": str(dtype).removeprefix("torch."),
    }
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable_row_params(model).values():
        p.requires_grad_(True)
    return model


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def grown_modules(model: nn.Module) -> tuple[GrownEmbedding, GrownHead]:
    """The grown embedding and head of a grown model (PEFT-wrapped or not)."""
    inner = _unwrap(model)
    emb, head = inner.get_input_embeddings(), inner.get_output_embeddings()
    if not isinstance(emb, GrownEmbedding) or not isinstance(head, GrownHead):
        raise GrowthError("model is not grown; call tokenlm.model.grow_model(model, space) first")
    return emb, head


def growth_info(model: nn.Module) -> dict:
    """The facts `grow_model` recorded (base vocab, row range, total, tied, space hash, init, dtype)."""
    grown_modules(model)
    return dict(_unwrap(model).tokenlm_growth)


def trainable_row_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """{"embed_rows": (N, D)} plus {"head_rows": (N, D)} when the head is untied."""
    emb, head = grown_modules(model)
    out = {"embed_rows": emb.new_rows}
    if not head.tied:
        out["head_rows"] = head.new_rows
    return out


def apply_stage(model: nn.Module, stage: str, lora_config: Any = None) -> nn.Module:
    """Set `requires_grad` for a training stage and return the model to train (a PeftModel for `lora`).

    rows: only the new rows train. lora: PEFT LoRA adapters (default r=8 on all attention/MLP projections)
    plus the new rows. full: every parameter, base rows included.
    """
    if stage not in STAGES:
        raise StageError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    rows = trainable_row_params(model)
    if stage == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = lora_config or LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS)
        if not hasattr(model, "peft_config"):
            model = get_peft_model(model, cfg)
    for p in model.parameters():
        p.requires_grad_(stage == "full")
    if stage == "lora":
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
    for p in rows.values():
        p.requires_grad_(True)
    _unwrap(model).tokenlm_growth["stage"] = stage
    return model


def trained_parameter_names(model: nn.Module) -> list[str]:
    """Sorted names of the parameters that require grad (shared Parameters listed once)."""
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


class ChunkedLossLM(nn.Module):
    """Wraps a (grown, possibly PEFT) causal LM so `forward` returns (mean loss, token count) via chunked CE.

    Wrap this module (not the bare LM) with DDP/FSDP/Accelerate so the head's parameters are used inside
    the wrapped forward.
    """

    def __init__(self, model: nn.Module, chunk_tokens: int = 1024) -> None:
        super().__init__()
        self.lm = model
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        inner = _unwrap(self.lm)
        out = inner.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False)
        return chunked_cross_entropy(out.last_hidden_state, inner.get_output_embeddings(), labels,
                                     chunk_tokens=self.chunk_tokens)
