"""One training stage from files: image-caption manifests + a token space -> a connector checkpoint folder.

`train_stage(StageRun(...), ConnectorTrainConfig(...))` is what `connectors train` runs: it loads the space's
vision tower, base LLM (or `base`), text codec and image layout; puts the tuned tower layers of `init_from`
(the previous stage's checkpoint) into the tower; computes each image's features once (the hidden states
entering the tower's trainable last layers, `cut = vision_trainable_blocks`); builds the connector (from
`init_from`'s config, or `resampler` with `presets.resampler_config`) and runs `train_connector`.

    resampler stage <- --init-from a vision checkpoint; finetune stage <- --init-from a resampler checkpoint
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import ConnectorError
from .train import ConnectorTrainConfig, TrainResult, train_connector

__all__ = ["StageRun", "train_stage", "caption_examples"]


@dataclass
class StageRun:
    """Files and model choices of one stage (the hyper-parameters are the `ConnectorTrainConfig`)."""

    data: tuple[str, ...]
    out: str
    val: tuple[str, ...] = ()
    space: str = "tiny"
    base: str | None = None  # base LLM hub id or folder; default: the space's base_model asset
    init_from: str | None = None  # the previous stage's checkpoint folder
    resampler: str | None = None  # default: init_from's, else perceiver
    dim: int = 512  # resampler width
    tokens: int = 64  # vectors per view
    resume: bool = False
    overwrite: bool = False
    stop_at: int | None = None
    max_examples: int = field(default=1_000_000)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("data must name at least one manifest file")
        if self.dim < 1 or self.tokens < 1 or self.max_examples < 1:
            raise ValueError(f"dim, tokens and max_examples must be >= 1, got {self.dim}, {self.tokens}, "
                             f"{self.max_examples}")


def caption_examples(paths: Sequence[str | Path], layout: Any, tower: Any, cut: int = 0, limit: int = 1_000_000) -> list:
    """`CaptionExample`s of the manifest rows in `paths`: features of each image (below the last `cut` layers)."""
    from uti.image.load import load_image

    from .data import CaptionExample, read_manifests
    from .views import image_view_features

    rows = read_manifests([Path(p) for p in paths])
    if len(rows) > limit:
        raise ConnectorError(f"manifests hold {len(rows)} rows, more than the limit {limit}; split the run")
    return [CaptionExample(image_view_features(load_image(r.image), layout, tower, cut), r.response,
                           r.prompt) for r in rows]


def _connector(run: StageRun, manifest: dict | None, tower: Any, llm: Any) -> Any:
    from .presets import resampler_config
    from .vlm import Connector, ConnectorConfig

    if manifest is not None:
        if run.resampler not in (None, manifest["connector"]["resampler"]):
            raise ConnectorError(f"--init-from {run.init_from} holds a {manifest['connector']['resampler']!r} "
                                 f"connector, not {run.resampler!r}; drop --resampler or start without --init-from")
        return None  # load_connector builds it
    name = run.resampler or "perceiver"
    cfg = resampler_config(name, tower.hidden_size, run.dim, run.tokens)
    return Connector(ConnectorConfig(llm_width=int(llm.config.hidden_size), resampler=name, resampler_cfg=cfg))


def train_stage(run: StageRun, config: ConnectorTrainConfig) -> TrainResult:
    """Train one stage as configured; the checkpoint goes to `run.out` (see the module doc)."""
    from tokenlm.model import load_base
    from uti.image.layout import Layout
    from uti.image.vision import VisionTower
    from uti.space import TokenSpace
    from uti.text import TextCodec

    from .checkpoint import load_connector, read_manifest
    from .inject import ImageTokenIds
    from .vlm import ContinuousVLM

    space = TokenSpace.load(run.space)
    if "image" not in space.abi:
        raise ConnectorError(f"token space {space.name!r} has no image section; use a space with an image codec")
    space.require_assets("vision_tower")
    tower = VisionTower.from_pretrained(space.asset("vision_tower"), feature_layer=space.abi["image"]["feature_layer"])
    space.check_asset("vision_tower", tower.weights_hash)
    layout = Layout.from_abi(space.abi["image"]["layout"])
    if not run.base:
        space.require_assets("base_model")
    llm = load_base(str(run.base or space.asset("base_model")))
    manifest = read_manifest(run.init_from) if run.init_from else None
    connector = _connector(run, manifest, tower, llm)
    if manifest is not None:  # checks LLM, tower and space; puts the tuned tower layers into `tower`
        vlm = load_connector(run.init_from, llm, tower, space_hash=space.hash).train()
    else:
        vlm = ContinuousVLM(llm, connector, ImageTokenIds.from_space(space))
    cut = config.vision_trainable_blocks
    train = caption_examples(run.data, layout, tower, cut, run.max_examples)
    val = caption_examples(run.val, layout, tower, cut, run.max_examples) if run.val else []
    text = TextCodec.from_space(space)
    return train_connector(vlm, train, val, encode=text.encode, config=config, out_dir=run.out, tower=tower.abi(),
                           space_hash=space.hash, resume=run.resume, overwrite=run.overwrite, stop_at=run.stop_at,
                           vision=tower, init_from=run.init_from)
