"""Patch-feature codebook: k-means fit (vector-quantize-pytorch), nearest-code quantisation, health report.

Metric: ``euclidean`` (default) assigns each feature to the code at the smallest L2 distance, which is
what k-means minimises and keeps the feature norm information (SigLIP's post-layernorm features differ
in norm across patches). ``cosine`` L2-normalises features and codes first (spherical k-means); pick it
when only directions matter. The metric is stored in the file and in the image ABI.

On disk: one safetensors file with a single tensor ``embed`` (K, D) float32 and the metric in its
metadata; `content_hash` equals `uti.hashing.hash_safetensors` of that file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError, TokenRangeError, UTIError
from ..hashing import hash_tensors
from ..io import atomic_save_safetensors

__all__ = ["METRICS", "Codebook", "CodebookError", "fit_codebook", "health_report", "refine_codebook"]

METRICS = ("euclidean", "cosine")
_CHUNK = 4096  # features per distance block: bounds memory at CHUNK x K floats
_RESCORE = 4  # candidates per feature re-ranked by the exact distance (CHUNK x RESCORE x D floats)


class CodebookError(UTIError, ValueError):
    """A codebook file or fit request is invalid."""


@dataclass(frozen=True)
class Codebook:
    """K code vectors of dimension D; `quantize` maps features to the nearest code index."""

    embed: torch.Tensor  # (K, D) float32
    metric: str = "euclidean"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise CodebookError(f"unknown codebook metric {self.metric!r}; valid: {', '.join(METRICS)}")
        if self.embed.ndim != 2 or not self.embed.is_floating_point() or self.embed.shape[0] < 1:
            raise CodebookError(f"codebook embed must be a float (K, D) tensor, got {tuple(self.embed.shape)}")

    @property
    def size(self) -> int:
        """Number of codes, K."""
        return int(self.embed.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension, D."""
        return int(self.embed.shape[1])

    def to(self, device: str | torch.device) -> Codebook:
        return Codebook(self.embed.to(device), self.metric)

    def quantize(self, feats: torch.Tensor) -> torch.Tensor:
        """Features (..., D) -> codes (...) long: index of the nearest code under the metric."""
        if feats.shape[-1] != self.dim:
            raise InputError(f"features have dimension {feats.shape[-1]}, the codebook expects {self.dim}")
        flat = feats.reshape(-1, self.dim).to(self.embed.device, torch.float32)  # (M, D)
        codes = torch.cat([self._nearest(block) for block in flat.split(_CHUNK)]) if len(flat) else flat.new_zeros(
            0, dtype=torch.long
        )
        return codes.reshape(feats.shape[:-1])

    def _nearest(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,) nearest code.

        The fast score x.e - |e|^2/2 (one matmul; its argmax is the argmin of |x - e|^2) cancels in float32:
        its error grows with |x||e|, so between codes closer than about eps * |x||e| it picks at random and
        k-means never settles. The best `_RESCORE` candidates by that score are therefore re-ranked by the
        directly computed |x - e|^2, which is exact to float32 for near-duplicate codes.
        """
        embed = self.embed.float()
        if self.metric == "cosine":
            x, embed = F.normalize(x, dim=-1), F.normalize(embed, dim=-1)
        half_norm = 0.5 * embed.square().sum(-1)  # (K,)
        score = torch.addmm(half_norm, x, embed.T, beta=-1)  # (B, K)
        cand = score.topk(min(_RESCORE, self.size), dim=-1).indices  # (B, C)
        dist = (x[:, None, :] - embed[cand]).square().sum(-1)  # (B, C)
        return cand.gather(1, dist.argmin(-1, keepdim=True))[:, 0]

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (...) long -> code vectors (..., D); out-of-range codes raise TokenRangeError."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.size):
            bad = int(codes[(codes < 0) | (codes >= self.size)][0])
            raise TokenRangeError(f"code {bad} is outside the codebook [0, {self.size}); the IDs belong to another space")
        return self.embed[codes.to(self.embed.device)]

    def content_hash(self) -> str:
        """Hash of the stored tensor (name, dtype, shape, bytes); equals hash_safetensors of the saved file."""
        return hash_tensors({"embed": self.embed})

    def abi(self) -> dict[str, Any]:
        """The codebook section of the image ABI."""
        return {"hash": self.content_hash(), "size": self.size, "dim": self.dim, "metric": self.metric}

    def save(self, path: str | Path) -> None:
        """Write the codebook atomically as safetensors (embed float32 + metric metadata)."""
        atomic_save_safetensors(path, {"embed": self.embed.float()}, {"format": "uti-codebook-1", "metric": self.metric})

    @classmethod
    def load(cls, path: str | Path) -> Codebook:
        """Read a codebook written by `save`; a wrong or damaged file raises CodebookError."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if "embed" not in set(f.keys()):
                    raise CodebookError(f"{path} has no 'embed' tensor; it is not a uti codebook")
                embed = f.get_tensor("embed")
        except (OSError, SafetensorError) as err:
            raise CodebookError(f"cannot read codebook {path}: {err}; re-fit it with `uti codebook fit`") from None
        return cls(embed, meta.get("metric", "euclidean"))


def fit_codebook(
    features: torch.Tensor, size: int, iters: int = 20, seed: int = 0, metric: str = "euclidean",
    init_budget: int = 1 << 26, restart_dead: bool = True,
) -> Codebook:
    """k-means over features (M, D) -> Codebook of `size` codes.

    Initialisation: vector-quantize-pytorch's `kmeans` (seeded random centres + Lloyd steps) on all
    features, or on a random subset when needed to keep its dense (subset x size) distance matrix within
    `init_budget` floats (when all fit there is no subset and no extra RNG draw). Refinement:
    `refine_codebook`, `iters` Lloyd steps over all features with dead-code restarts, assigning in blocks
    with `Codebook.quantize`, so memory stays O(block x size) for millions of vectors. With `cosine` the
    features and centres are L2-normalised (spherical k-means).
    """
    from vector_quantize_pytorch.vector_quantize_pytorch import kmeans

    if metric not in METRICS:
        raise CodebookError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if features.ndim != 2 or len(features) < size or size < 1:
        raise CodebookError(
            f"need at least size={size} feature vectors (M, D) to fit, got {tuple(features.shape)}; "
            "use more images or a smaller --size"
        )
    x = features.float()
    if metric == "cosine":
        x = F.normalize(x, dim=-1)
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        torch.manual_seed(seed)
        m = max(size, init_budget // size)
        subset = x if len(x) <= m else x[torch.randperm(len(x), device=x.device)[:m]]  # (m, D)
        means, _ = kmeans(subset[None], size, num_iters=min(iters, 10), use_cosine_sim=metric == "cosine")
    # the features, not x: refine_codebook normalises them itself, once, for cosine
    return refine_codebook(Codebook(means[0].contiguous(), metric), features, iters, restart_dead=restart_dead)


def refine_codebook(codebook: Codebook, features: torch.Tensor, iters: int, restart_dead: bool = True) -> Codebook:
    """`iters` Lloyd steps of `codebook` over features (M, D): assign each to its nearest code, move each used
    code to its members' mean.

    Dead-code restarts (the idea of vector-quantize-pytorch's `expire_codes_`, made deterministic): before a
    step's mean update, every code with no members is moved onto one of the worst-quantised features (largest
    distance to its code), so it splits the worst-fitted region instead of staying where nothing is (plain
    Lloyd keeps an empty code's centre forever: a duplicate initial centre or a far, small cluster that no
    centre started in). Each step still ends with a mean update, so a converged result is a Lloyd fixed point.
    """
    x = features.float()
    if codebook.metric == "cosine":
        x = F.normalize(x, dim=-1)
    for _ in range(iters):
        codes = codebook.quantize(x)  # (M,)
        if restart_dead:
            codebook, codes = _restart_dead(codebook, x, codes)
        codebook = _mean_step(codebook, x, codes)
    return codebook


def _restart_dead(codebook: Codebook, x: torch.Tensor, codes: torch.Tensor) -> tuple[Codebook, torch.Tensor]:
    """Move codes without members onto the worst-quantised of x (M, D); returns the codebook and new codes."""
    dead = (torch.bincount(codes, minlength=codebook.size) == 0).nonzero()[:, 0]  # (N,)
    if not len(dead):
        return codebook, codes
    err = torch.cat([(xb - codebook.embed[cb]).square().sum(-1)  # (M,) squared error, in blocks
                     for xb, cb in zip(x.split(_CHUNK), codes.split(_CHUNK))])
    worst = err.sort(descending=True, stable=True).indices[: len(dead)]  # stable: ties by index, deterministic
    embed = codebook.embed.clone()
    embed[dead[: len(worst)]] = x[worst]
    codebook = Codebook(embed, codebook.metric)
    return codebook, codebook.quantize(x)


def _mean_step(codebook: Codebook, x: torch.Tensor, codes: torch.Tensor) -> Codebook:
    """Move each code with members (codes (M,) of x (M, D)) to their mean; empty codes keep their centre."""
    sums = torch.zeros_like(codebook.embed).index_add_(0, codes, x)  # (K, D)
    counts = torch.bincount(codes, minlength=codebook.size).to(x.dtype)[:, None]  # (K, 1)
    means = torch.where(counts > 0, sums / counts.clamp(min=1), codebook.embed)
    if codebook.metric == "cosine":
        means = F.normalize(means, dim=-1)
    return Codebook(means, codebook.metric)


def health_report(codebook: Codebook, features: torch.Tensor) -> dict[str, Any]:
    """Usage statistics of `codebook` on features (M, D), e.g. held-out images.

    utilisation: fraction of codes used at least once; perplexity: exp(entropy) of the code histogram
    (K when uniform, 1 when collapsed); dead_codes: codes never used; mse: mean squared quantisation error;
    uniform_utilisation: the utilisation a perfectly balanced codebook is expected to show on this many
    vectors, 1 - (1 - 1/K)^M, the ceiling to read `utilisation` against (about 0.90 for 144 vectors and K=64:
    a few held-out vectors per code leave codes unused by chance, not because they are dead).
    """
    codes = codebook.quantize(features)
    counts = torch.bincount(codes.reshape(-1).cpu(), minlength=codebook.size).double()
    total = counts.sum().item()
    probs = counts / max(total, 1.0)
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum().item()
    err = (codebook.lookup(codes).float() - features.to(codebook.embed.device).float()).square().mean().item()
    return {
        "num_vectors": int(total),
        "codebook_size": codebook.size,
        "utilisation": float((counts > 0).sum().item() / codebook.size),
        "perplexity": float(math.exp(entropy)) if total else 0.0,
        "dead_codes": int((counts == 0).sum().item()),
        "mse": float(err) if total else 0.0,
        "uniform_utilisation": float(1.0 - (1.0 - 1.0 / codebook.size) ** total),
    }
