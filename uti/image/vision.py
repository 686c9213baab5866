"""SigLIP / SigLIP2 vision towers: uint8 views in, per-patch features out.

Any SigLIP or SigLIP2 checkpoint loads by hub id or local folder through transformers:

* fixed-resolution checkpoints (model_type ``siglip`` / ``siglip_vision_model``, which includes the
  fixed-resolution SigLIP2 releases such as ``google/siglip2-so400m-patch14-384``) use
  `SiglipVisionModel` on ``(N, 3, S, S)`` pixels;
* NaFlex checkpoints (model_type ``siglip2`` / ``siglip2_vision_model``) use `Siglip2VisionModel` on
  patchified pixels with `spatial_shapes`; a square view becomes a ``g x g`` grid with
  ``g = isqrt(max_num_patches)``, which is what transformers' Siglip2 image processor picks for a
  square input.

A full ``SiglipModel``/``Siglip2Model`` checkpoint (text + vision) loads its vision half only.

Feature layer: ``-1`` (the default) is the model's ``last_hidden_state`` (after the post-layernorm),
the tower's standard output. Any other value ``k`` indexes ``hidden_states`` as transformers returns
them without that final norm: ``0`` is the patch embeddings, ``k`` the output of layer ``k``, negative
values count from the end (``-2`` = penultimate layer, as LLaVA-style models use). The layers after
the feature layer are dropped at load time, so they cost neither time nor memory.

Preprocessing follows the checkpoint's ``preprocessor_config.json`` when present (defaults: rescale
1/255, mean = std = 0.5): views are resized to the tower's size with bicubic antialiased interpolation in
torch (a no-op when the layout renders views at the tower's size, which is the recommended setup), then
rescaled and normalised in float32.

Batch invariance: a view's features must not depend on the other views of its forward, so that codes are the
same whether an image is encoded alone or among others, at any batch size. On CPU, every op of the tower is
per-view bit-exact except the MLP activation: PyTorch's vectorised GELU-tanh computes the tail of a tensor
(numel mod 32, and each thread's chunk edge) with the scalar formula, which rounds differently, so which
elements take it depends on the batch size (measured: features differ by up to 1e-6 at hidden 1152 between
batch 1 and 2). `_per_view_activations` therefore runs each activation one view at a time (bit-exact at 1,
2 and 4 threads for batch sizes 1..16). In bfloat16 on CPU the linear layers are not per-view exact either
(oneDNN picks GEMM kernels by row count: measured up to 0.03 apart at hidden 1152), so a CPU tower in a
dtype other than float32 runs one view per forward (its GEMMs have hundreds of rows per view already). On an
accelerator, GEMM kernels are chosen by shape, so every forward there is padded to exactly `batch_size`
views (`_invariant_forward`); this is not measured here (no GPU).

Partial training (the continuous track's `vision` stage): `top(k)` is a module running the tower's last
``k`` kept encoder layers (the same module objects, made trainable) plus its frozen post-layernorm, and
`encode_below(views, k)` the hidden states entering them, computed once without gradients. Because the
layers below are frozen, ``top(k)(encode_below(v, k))`` equals ``encode(v)`` (tested), so the lower layers
run once per image instead of once per step. `block_state(k)` / `load_block_state` move those layers'
weights in and out of a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, MissingAssetError, UTIError
from ..hashing import hash_safetensors

__all__ = ["VisionTower", "VisionTowerError", "TowerTop"]

_FIXED_TYPES = {"siglip", "siglip_vision_model"}
_NAFLEX_TYPES = {"siglip2", "siglip2_vision_model"}


class VisionTowerError(UTIError, ValueError):
    """A checkpoint is not a SigLIP/SigLIP2 vision tower, or an option does not fit it."""


def _local_dir(name_or_path: str | Path) -> Path:
    """A local folder holding the checkpoint: the path itself, or the hub snapshot (cached or downloaded)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).startswith((".", "/")):
        raise MissingAssetError(f"vision tower {name_or_path} is not a checkpoint folder; pass a folder with config.json")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.safetensors"]))
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, auth: all mean "not available here"
        raise MissingAssetError(
            f"vision tower {name_or_path!r} is neither a local folder nor downloadable ({type(err).__name__}); "
            "pass a local checkpoint folder or a reachable hub id"
        ) from None


def _preprocessor(folder: Path) -> dict[str, Any]:
    file = folder / "preprocessor_config.json"
    return json.loads(file.read_text()) if file.is_file() else {}


@dataclass
class VisionTower:
    """A loaded SigLIP-family vision tower with its preprocessing and identity.

    Use `VisionTower.from_pretrained`; `encode` maps uint8 views (N, S, S, 3) to features (N, P, D).
    """

    model: torch.nn.Module
    name: str
    weights_hash: str
    feature_layer: int
    image_size: int
    patch_size: int
    hidden_size: int
    num_layers: int
    naflex: bool
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale: float = 1 / 255
    batch_size: int = 16

    def __post_init__(self) -> None:
        n = self.num_layers
        if not (self.feature_layer == -1 or -(n + 1) <= self.feature_layer <= n):
            raise VisionTowerError(
                f"feature_layer={self.feature_layer} does not exist in a {n}-layer tower; "
                f"use -1 (post-layernorm output) or a hidden_states index in [-{n + 1}, {n}]"
            )
        if self.batch_size < 1:
            raise VisionTowerError(f"batch_size must be >= 1, got {self.batch_size}")
        _keep_up_to(self.model, None if self.feature_layer == -1 else self.feature_layer % (n + 1))
        _per_view_activations(self.model)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        feature_layer: int = -1,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> VisionTower:
        """Load the vision tower of any SigLIP/SigLIP2 checkpoint (hub id or local folder)."""
        from transformers import AutoConfig, Siglip2VisionModel, SiglipVisionModel

        folder = _local_dir(name_or_path)
        is_local = Path(name_or_path).is_dir()
        if not (folder / "config.json").is_file():
            raise MissingAssetError(f"vision tower folder {folder} has no config.json; pass a transformers checkpoint")
        model_type = AutoConfig.from_pretrained(folder).model_type
        if model_type not in _FIXED_TYPES | _NAFLEX_TYPES:
            raise VisionTowerError(
                f"{name_or_path} is a {model_type!r} checkpoint; expected one of "
                f"{', '.join(sorted(_FIXED_TYPES | _NAFLEX_TYPES))}"
            )
        naflex = model_type in _NAFLEX_TYPES
        model_cls = Siglip2VisionModel if naflex else SiglipVisionModel
        model = model_cls.from_pretrained(folder, dtype=dtype).to(device).eval()  # bars: see uti.cli_base
        cfg, pre = model.config, _preprocessor(folder)
        patch = int(cfg.patch_size)
        if naflex:
            size = patch * math.isqrt(int(pre.get("max_num_patches", cfg.num_patches)))
        else:
            size = int(cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0])
        return cls(
            model=model,
            name=folder.name if is_local else str(name_or_path),  # no absolute paths in an ABI
            weights_hash=hash_safetensors(folder),
            feature_layer=int(feature_layer),
            image_size=size,
            patch_size=patch,
            hidden_size=int(cfg.hidden_size),
            num_layers=int(cfg.num_hidden_layers),
            naflex=naflex,
            mean=tuple(float(v) for v in pre.get("image_mean", (0.5, 0.5, 0.5))),
            std=tuple(float(v) for v in pre.get("image_std", (0.5, 0.5, 0.5))),
            rescale=float(pre.get("rescale_factor", 1 / 255)),
            batch_size=batch_size,
        )

    @property
    def grid(self) -> int:
        """Patches per side of a view."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches (features) per view, P."""
        return self.grid * self.grid

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def abi(self) -> dict[str, Any]:
        """Identity of the tower: everything that changes what a feature (hence a code) means."""
        return {
            "name": self.name,
            "weights_hash": self.weights_hash,
            "architecture": "siglip2_naflex" if self.naflex else "siglip",
            "feature_layer": self.feature_layer,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "hidden_size": self.hidden_size,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
        }

    def pixel_values(self, views: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 views (N, S, S, 3) -> normalised float32 pixels (N, 3, image_size, image_size) on the device."""
        views = torch.as_tensor(views)
        if views.dtype != torch.uint8 or views.ndim != 4 or views.shape[-1] != 3:
            raise InputError(
                f"views must be uint8 (N, S, S, 3); got {views.dtype!s} {tuple(views.shape)}; "
                "render them with uti.image.e2p.render_views"
            )
        x = views.to(self.device).permute(0, 3, 1, 2).float()  # (N, 3, S, S) in [0, 255]
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp(0, 255).round()
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x * self.rescale - mean) / std

    @torch.inference_mode()
    def encode(self, views: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 views (N, S, S, 3) -> float32 features (N, P, D), in chunks of `batch_size` views."""
        pixels = self.pixel_values(views)  # (N, 3, H, W)
        out = [self._invariant_forward(chunk) for chunk in pixels.split(self.batch_size)]
        if not out:
            return torch.empty(0, self.num_patches, self.hidden_size, device=self.device)
        return torch.cat(out).float()

    def _invariant_forward(self, chunk: torch.Tensor) -> torch.Tensor:
        """One chunk (B, 3, H, W) -> (B, P, D) whose rows do not depend on the other views (module doc): as is
        in float32 on CPU, one view per forward in other dtypes on CPU, padded to `batch_size` views elsewhere."""
        if self.device.type == "cpu":
            if self.dtype == torch.float32:
                return self._forward(chunk)
            return torch.cat([self._forward(view) for view in chunk.split(1)])
        n = len(chunk)
        if n < self.batch_size:  # one forward shape, hence one GEMM kernel choice
            chunk = torch.cat([chunk, chunk.new_zeros((self.batch_size - n, *chunk.shape[1:]))])
        return self._forward(chunk)[:n]

    @property
    def kept_layers(self) -> int:
        """Encoder layers this tower runs (`num_layers`, or the feature layer's index when it is not -1)."""
        return len(self.model.encoder.layers)

    def _check_blocks(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.kept_layers:
            raise VisionTowerError(f"trainable blocks must be an integer in [0, {self.kept_layers}] for tower "
                                   f"{self.name} ({self.kept_layers} layers up to its feature layer), got {k!r}")
        return k

    def top(self, k: int) -> "TowerTop":
        """The last `k` kept encoder layers (trainable, shared with this tower) + the frozen post-layernorm."""
        k = self._check_blocks(k)
        for p in self.model.parameters():
            p.requires_grad_(False)
        layers = list(self.model.encoder.layers)[self.kept_layers - k:]
        for p in (p for layer in layers for p in layer.parameters()):
            p.requires_grad_(True)
        return TowerTop(layers, self.model.post_layernorm)

    def encode_below(self, views: torch.Tensor | np.ndarray, k: int) -> torch.Tensor:
        """uint8 views (N, S, S, 3) -> float32 hidden states (N, P, D) entering the last `k` kept layers.

        A plain tensor (not an inference-mode one), so it can feed `top(k)` in a graph that trains."""
        k = self._check_blocks(k)
        enc = self.model.encoder
        with _swapped(enc, "layers", enc.layers[: self.kept_layers - k]), \
                _swapped(self.model, "post_layernorm", torch.nn.Identity()):
            return self.encode(views).clone()

    def block_state(self, k: int) -> dict[str, torch.Tensor]:
        """CPU copies of the last `k` kept layers' tensors, keyed `encoder.layers.<index>.<name>`."""
        k = self._check_blocks(k)
        return {f"encoder.layers.{i}.{name}": t.detach().cpu().clone()
                for i in range(self.kept_layers - k, self.kept_layers)
                for name, t in self.model.encoder.layers[i].state_dict().items()}

    def load_block_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put `block_state` tensors back (exactly the last layers' keys and shapes, checked by the caller)."""
        with torch.no_grad():
            own = self.model.state_dict()
            for key, t in tensors.items():
                own[key].copy_(t.to(own[key].dtype))

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """One chunk (B, 3, H, W) -> (B, P, D) at the configured feature layer."""
        pixels = pixels.to(self.dtype)
        if self.naflex:
            b, p, g = pixels.shape[0], self.patch_size, self.grid
            # (B, 3, g*p, g*p) -> (B, g*g, p*p*3): row-major patches, channel-last inside a patch
            patches = pixels.reshape(b, 3, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * 3)
            out = self.model(
                pixel_values=patches,
                pixel_attention_mask=torch.ones(b, g * g, dtype=torch.long, device=pixels.device),
                spatial_shapes=torch.tensor([[g, g]] * b, device=pixels.device),
            )
        else:
            out = self.model(pixel_values=pixels)
        return out.last_hidden_state  # the feature layer (see _keep_up_to)


class _PerView(torch.nn.Module):
    """Apply `act` to one view (first dim) at a time, so its result never depends on the batch (module doc)."""

    def __init__(self, act: torch.nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, P, I) -> (B, P, I)
        return self.act(x) if len(x) == 1 else torch.cat([self.act(v) for v in x.split(1)])


def _per_view_activations(model: torch.nn.Module) -> None:
    """Wrap every `activation_fn` module of the tower (the encoder MLPs) in `_PerView` (once)."""
    for module in list(model.modules()):
        act = getattr(module, "activation_fn", None)
        if isinstance(act, torch.nn.Module) and not isinstance(act, _PerView):
            module.activation_fn = _PerView(act)


class TowerTop(torch.nn.Module):
    """Hidden states (N, P, D) entering the tower's last k layers -> the tower's features (N, P, D)."""

    def __init__(self, layers: list[torch.nn.Module], post_layernorm: torch.nn.Module) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)
        self.post_layernorm = post_layernorm  # frozen (`VisionTower.top` freezes everything but the layers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (N, P, D) -> (N, P, D); a full attention mask is no mask (None), as in the tower."""
        if len(self.layers):
            hidden = hidden.to(next(self.layers.parameters()).dtype)
        for layer in self.layers:
            hidden = layer(hidden, None)
        return self.post_layernorm(hidden)


@contextlib.contextmanager
def _swapped(obj: Any, name: str, value: Any) -> Any:
    """Temporarily set `obj.name = value` (a module attribute), restoring it on exit."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _keep_up_to(model: torch.nn.Module, layer: int | None) -> None:
    """Make `last_hidden_state` the wanted features and skip work that cannot change them.

    The pooling head never feeds patch features, so it is switched off. For a feature layer k (not -1)
    only the first k encoder layers are kept and the post-layernorm is dropped, so `last_hidden_state`
    equals transformers' `hidden_states[k]` while layers after k are neither run nor kept in memory.
    """
    model.use_head = False
    if layer is not None:
        model.encoder.layers = model.encoder.layers[:layer]
        model.post_layernorm = torch.nn.Identity()

