"""Continuous-embedding track: a resampler + MLP projector feeding image vectors to a causal LLM.

Three training stages (`connectors.train`): `vision` (VICReg on overlapping tiles, the tower's last layers),
`resampler` (the connector, LM loss + w x VICReg), `finetune` (+ LoRA); the `connectors` CLI runs them.

It runs on the same data, views and vision tower as the discrete-token track so the two can be compared.
"""

from __future__ import annotations

from uti.version import __version__  # before the imports: checkpoint records it

from .checkpoint import load_connector, load_vision_blocks, save_connector
from .data import CaptionExample, ManifestRow, collate_captions, read_manifests
from .errors import ConnectorError, PlaceholderCountError, TowerMismatchError, WidthMismatchError
from .inject import IMAGE_MARKER, ImageTokenIds, ViewFeatures, expand_image_placeholders
from .perceiver import PerceiverConfig, PerceiverResampler
from .pooled import PooledMLPConfig, PooledMLPResampler
from .projector import MLPProjector
from .registry import build_resampler, register_resampler, resampler_names
from .presets import resampler_config
from .train import STAGES, ConnectorTrainConfig, TrainResult, evaluate_captions, train_connector
from .view_pos import ViewPositionEncoding
from .views import image_view_features
from .vlm import Connector, ConnectorConfig, ContinuousVLM, add_lora, generate_text

__all__ = [
    "ConnectorError",
    "ManifestRow",
    "read_manifests",
    "PlaceholderCountError",
    "TowerMismatchError",
    "WidthMismatchError",
    "IMAGE_MARKER",
    "ImageTokenIds",
    "ViewFeatures",
    "expand_image_placeholders",
    "PerceiverConfig",
    "PerceiverResampler",
    "PooledMLPConfig",
    "PooledMLPResampler",
    "MLPProjector",
    "build_resampler",
    "register_resampler",
    "resampler_names",
    "ViewPositionEncoding",
    "Connector",
    "ConnectorConfig",
    "ContinuousVLM",
    "add_lora",
    "generate_text",
    "save_connector",
    "load_connector",
    "load_vision_blocks",
    "resampler_config",
    "STAGES",
    "CaptionExample",
    "collate_captions",
    "ConnectorTrainConfig",
    "TrainResult",
    "train_connector",
    "evaluate_captions",
    "image_view_features",
    "__version__",
]
