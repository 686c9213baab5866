"""Connector-only checkpoints: `connector.<hash>.safetensors` (+ `lora.<hash>.safetensors`, + `vision.<hash>.safetensors`
with the vision tower's tuned last layers) and `connector.json`.

The manifest (schema `connectors.manifest`, written last: the commit point, see `tokenlm.ckpt_store`)
records the connector config, the vision tower identity (its `abi()`, incl. width), the LLM (name, width,
vocabulary and a fingerprint of all its weights), the image special IDs and token-space hash, the stage,
the tensor shapes, the data files with their content hashes, and a `content_hash` over all of it.
Loading refuses an edited manifest or file, and a checkpoint made for another tower or LLM, with a
one-line error, before the connector is built (its size is checked on the meta device first). The base
LLM is never saved: it is loaded by name and the connector (and LoRA) is put back on it. Tuned tower layers
(stage `vision`, or any stage with `vision_trainable_blocks`) go back into the `VisionTower` itself
(`load_vision_blocks`), only onto the tower they were trained from: same identity (`abi()`: weights hash,
architecture, feature layer, sizes) and the same depth. Saving over an
existing checkpoint is crash-safe: a kill at any point leaves the old or the new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tokenlm.ckpt_store import commit, content_name, data_path, read_json, read_tensors
from tokenlm.fingerprint import model_fingerprint
from uti.config import to_dict
from uti.errors import HashMismatchError, MissingAssetError, UTIError
from uti.hashing import hash_json, hash_tensors
from uti.io import atomic_save_safetensors, portable_ref
from uti.version import __version__

from .errors import ConnectorError, TowerMismatchError, WidthMismatchError
from .inject import ImageTokenIds
from .manifest import FORMAT, SCHEMA, content_hash, parse_manifest
from .vlm import Connector, ConnectorConfig, ContinuousVLM, add_lora

__all__ = ["MANIFEST", "WEIGHTS_STEM", "LORA_STEM", "VISION_STEM", "VisionBlocks", "save_connector", "read_manifest",
           "load_connector", "checkpoint_tensors", "load_vision_blocks", "vision_tensors"]

MANIFEST, WEIGHTS_STEM, LORA_STEM, VISION_STEM = "connector.json", "connector", "lora", "vision"
_EXT = ".safetensors"


def _llm_identity(llm: torch.nn.Module) -> dict[str, Any]:
    cfg = llm.config
    return {
        "name": str(getattr(cfg, "_name_or_path", "") or ""),
        "model_type": str(getattr(cfg, "model_type", "")),
        "hidden_size": int(cfg.hidden_size),
        "vocab_size": int(cfg.vocab_size),
        "fingerprint": model_fingerprint(llm),
    }


def _lora_state(vlm: ContinuousVLM) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v for k, v in get_peft_model_state_dict(vlm.llm).items()}


def _specs(tensors: dict[str, torch.Tensor]) -> dict[str, dict]:
    return {k: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for k, t in tensors.items()}


@dataclass
class VisionBlocks:
    """Tuned tower layers to save: this stage's trainable count, the tensors of the last `len` layers
    (`VisionTower.block_state`, at least the trainable ones) and the tower's depth (`VisionTower.kept_layers`)."""

    trainable: int
    tuned: int
    depth: int
    tensors: dict[str, torch.Tensor]


def _file_entry(stem: str, tensors: dict[str, torch.Tensor]) -> tuple[dict, tuple]:
    digest = hash_tensors(tensors)
    return ({"name": content_name(stem, digest, _EXT), "hash": digest},
            (stem, _EXT, digest, lambda p: atomic_save_safetensors(p, tensors, metadata={"format": FORMAT})))


def save_connector(
    vlm: ContinuousVLM, out_dir: str | Path, tower: dict[str, Any], *, space_hash: str | None = None,
    extra: dict[str, Any] | None = None, stage: str | None = None, vision: VisionBlocks | None = None,
) -> Path:
    """Write the connector (and LoRA if present, and tuned tower layers if given) of `vlm` to `out_dir`.

    `tower` is the tower's `abi()` dict; `stage` defaults to `finetune` with LoRA, else `resampler`."""
    if int(tower.get("hidden_size", vlm.connector.in_dim)) != vlm.connector.in_dim:
        raise WidthMismatchError(
            f"tower width {tower.get('hidden_size')} differs from the connector input width {vlm.connector.in_dim}"
        )
    tower = {**tower, "hidden_size": int(tower.get("hidden_size", vlm.connector.in_dim))}
    tensors = {k: v.detach().cpu() for k, v in vlm.connector.state_dict().items()}
    lora = _lora_state(vlm) if vlm.lora else None
    files, writes = {}, []
    for role, stem, part in (("weights", WEIGHTS_STEM, tensors), ("lora", LORA_STEM, lora),
                             ("vision", VISION_STEM, vision.tensors if vision and vision.tuned else None)):
        if part is not None:
            files[role], write = _file_entry(stem, part)
            writes.append(write)
    llm = _llm_identity(vlm.llm)  # a local LLM folder is recorded relative to out_dir: no absolute path
    tuned = vision is not None and vision.tuned > 0
    manifest = {
        "format": FORMAT, "schema": SCHEMA, "toolkit_version": __version__,
        "stage": stage or ("finetune" if lora is not None else "resampler"),
        "connector": to_dict(vlm.connector.config), "tower": tower, "tower_hash": hash_json(tower),
        "llm": {**llm, "name": portable_ref(llm["name"], out_dir)}, "image_ids": to_dict(vlm.ids), "token_space_hash": space_hash,
        "lora": vlm.lora, "tensors": _specs(tensors), "lora_tensors": _specs(lora) if lora is not None else None,
        "vision_trainable_blocks": vision.trainable if vision else 0,
        "vision": {"tuned_blocks": vision.tuned, "depth": vision.depth} if tuned else None,
        "vision_tensors": _specs(vision.tensors) if tuned else None,
        "files": files, "extra": extra or {},
    }
    manifest["content_hash"] = content_hash(manifest)
    parse_manifest(manifest, "manifest being saved")  # the saver obeys the reader's schema
    return commit(out_dir, writes, MANIFEST, manifest)


def read_manifest(ckpt_dir: str | Path) -> dict[str, Any]:
    """The manifest of a connector checkpoint folder, content hash and schema checked."""
    path = Path(ckpt_dir) / MANIFEST
    if not path.is_file():
        raise MissingAssetError(f"{path} not found; pass a folder written by save_connector")
    data = read_json(path, ConnectorError)
    parse_manifest(data, str(path))
    return data


def _file(where: Path, manifest: dict, role: str, stem: str) -> Path:
    return data_path(where, manifest["files"][role]["name"], stem, _EXT, ConnectorError)


def _read(where: Path, manifest: dict, role: str, stem: str, specs: dict) -> dict[str, torch.Tensor]:
    spec = {k: (v["shape"], v["dtype"]) for k, v in specs.items()}
    return read_tensors(_file(where, manifest, role, stem), spec, manifest["files"][role]["hash"], ConnectorError)


def checkpoint_tensors(ckpt_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(connector tensors, LoRA tensors or None) of a checkpoint, manifest and file hashes checked (for resume)."""
    where = Path(ckpt_dir)
    manifest = read_manifest(where)
    lora = _read(where, manifest, "lora", LORA_STEM, manifest["lora_tensors"]) if manifest["lora"] else None
    return _read(where, manifest, "weights", WEIGHTS_STEM, manifest["tensors"]), lora


def vision_tensors(ckpt_dir: str | Path, tower: Any) -> dict[str, torch.Tensor]:
    """The tuned tower layers of a checkpoint ({} if none), after checking that `tower` (a `VisionTower`) is
    the one they were trained from: same `abi()` and depth, and the layers' names and shapes match it."""
    where = Path(ckpt_dir)
    manifest = read_manifest(where)
    if manifest["vision"] is None:
        return {}
    _check_tower(manifest, tower.abi(), where)
    ref = manifest["vision"]
    if ref["depth"] != tower.kept_layers:
        raise TowerMismatchError(
            f"connector {where} tuned the last {ref['tuned_blocks']} of {ref['depth']} layers of vision tower "
            f"{manifest['tower'].get('name')!r} but the given tower has {tower.kept_layers}; load the tower it was trained on"
        )
    own = {k: list(t.shape) for k, t in tower.block_state(ref["tuned_blocks"]).items()}
    if own != {k: v["shape"] for k, v in manifest["vision_tensors"].items()}:
        raise TowerMismatchError(f"connector {where}: its tuned tower layers do not fit the layers of the given tower "
                                 f"{tower.name!r}; load the tower it was trained on")
    return _read(where, manifest, "vision", VISION_STEM, manifest["vision_tensors"])


def load_vision_blocks(ckpt_dir: str | Path, tower: Any) -> int:
    """Put a checkpoint's tuned tower layers back into `tower` (a `VisionTower`, changed in place); returns how
    many of its last layers were replaced (0 when the checkpoint tuned none). Refuses another tower in one line."""
    tensors = vision_tensors(ckpt_dir, tower)
    if tensors:
        tower.load_block_state(tensors)
    return int(read_manifest(ckpt_dir)["vision"]["tuned_blocks"]) if tensors else 0


def _check_tower(manifest: dict[str, Any], tower: dict[str, Any] | None, where: Path) -> None:
    if tower is None:
        return
    want = manifest["tower"]
    if int(tower.get("hidden_size", -1)) != int(want.get("hidden_size", -2)):
        raise WidthMismatchError(
            f"vision tower {tower.get('name')!r} is {tower.get('hidden_size')} wide but connector {where} was trained "
            f"on {want.get('name')!r} ({want.get('hidden_size')} wide); load the tower it was trained on"
        )
    if hash_json(tower) != manifest["tower_hash"]:
        diff = sorted(k for k in set(want) | set(tower) if want.get(k) != tower.get(k))
        raise TowerMismatchError(
            f"connector {where} was trained on vision tower {want.get('name')!r} (hash {manifest['tower_hash']}) but "
            f"got {tower.get('name')!r} (hash {hash_json(tower)}), differing in {', '.join(diff)}; "
            "load the tower it was trained on"
        )


def _check_llm(manifest: dict[str, Any], llm: torch.nn.Module, where: Path) -> None:
    want, got = manifest["llm"], _llm_identity(llm)
    for key in ("hidden_size", "vocab_size", "fingerprint"):
        if want[key] != got[key]:
            raise TowerMismatchError(
                f"connector {where} was trained on LLM {want['name']!r} with {key}={want[key]} but the given LLM "
                f"{got['name']!r} has {key}={got[key]}; load the base LLM it was trained on"
            )


def _build_connector(manifest: dict[str, Any], llm: torch.nn.Module, where: Path) -> Connector:
    """The connector of the manifest, sized on the meta device first: at most twice the LLM's size (two projectors
    into its width; a real connector is a few percent of it), same tensors."""
    try:
        config = ConnectorConfig(**{**manifest["connector"], "resampler_cfg": dict(manifest["connector"]["resampler_cfg"])})
        with torch.device("meta"):
            probe = Connector(config)
    except UTIError as err:
        raise ConnectorError(f"{where / MANIFEST}: connector config: {err}") from None
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConnectorError(f"{where / MANIFEST}: connector config cannot be built ({str(err).splitlines()[0][:160]})") from None
    size, limit = sum(p.numel() for p in probe.parameters()), sum(p.numel() for p in llm.parameters())
    if size > 2 * limit:
        raise ConnectorError(f"{where / MANIFEST}: connector config asks for {size} parameters, more than twice its "
                             f"LLM's {limit}; the manifest is not from a real training run")
    shapes = {k: list(t.shape) for k, t in probe.state_dict().items()}
    if shapes != {k: v["shape"] for k, v in manifest["tensors"].items()}:
        raise ConnectorError(f"{where / MANIFEST}: tensor list does not match the connector its config builds")
    return Connector(config)


def load_connector(
    ckpt_dir: str | Path, llm: torch.nn.Module, tower: Any = None, *, space_hash: str | None = None
) -> ContinuousVLM:
    """Base `llm` + connector checkpoint (+ LoRA) -> a `ContinuousVLM` in eval mode ready to `generate`.

    `tower` (the tower's `abi()`, or the `VisionTower` itself) and `space_hash` are checked against the
    manifest when given; the LLM always (width, vocabulary, fingerprint of all its weights). A checkpoint
    with tuned tower layers needs the `VisionTower`: they are put back into it (`load_vision_blocks`).
    """
    where = Path(ckpt_dir)
    manifest = read_manifest(where)
    abi = tower.abi() if hasattr(tower, "abi") else tower
    _check_tower(manifest, abi, where)
    if manifest["vision"] is not None and not hasattr(tower, "load_block_state"):
        raise ConnectorError(
            f"connector {where} tuned the last {manifest['vision']['tuned_blocks']} layers of its vision tower; pass "
            "the VisionTower itself (not its abi()) to load_connector so they are put back"
        )
    _check_llm(manifest, llm, where)
    if space_hash is not None and manifest.get("token_space_hash") not in (None, space_hash):
        raise HashMismatchError(
            f"connector {where} was trained for token space {manifest['token_space_hash']} but the given space "
            f"is {space_hash}; use the token space it was trained with"
        )
    connector = _build_connector(manifest, llm, where)
    if manifest["vision"] is not None:
        load_vision_blocks(where, tower)
    connector.load_state_dict(_read(where, manifest, "weights", WEIGHTS_STEM, manifest["tensors"]), strict=True)
    vlm = ContinuousVLM(llm, connector, ImageTokenIds(**manifest["image_ids"]))
    if manifest["lora"]:
        from peft import set_peft_model_state_dict

        try:
            add_lora(vlm, **manifest["lora"])
        except (ValueError, TypeError, KeyError) as err:  # peft: target modules not in this LLM
            raise ConnectorError(f"{where / MANIFEST}: cannot add its LoRA ({str(err).splitlines()[0][:160]})") from None
        built = {k: list(t.shape) for k, t in _lora_state(vlm).items()}
        if built != {k: v["shape"] for k, v in manifest["lora_tensors"].items()}:
            raise ConnectorError(f"{where / MANIFEST}: LoRA tensor list does not match the adapters its settings build")
        lora = _read(where, manifest, "lora", LORA_STEM, manifest["lora_tensors"])
        set_peft_model_state_dict(vlm.llm, lora)
    return vlm.eval()
