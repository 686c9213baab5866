"""Connector-only checkpoints: `connector.safetensors` (+ `lora.safetensors` after stage 2) and `connector.json`.

The manifest records the connector config, the vision tower identity (its `abi()`, incl. width), the LLM
(name, width, vocabulary), the image special IDs and token-space hash, the stage and a content hash of
the tensors. Loading refuses a checkpoint made for another tower or LLM with a one-line error. The base
LLM is never saved: it is loaded by name and the connector (and LoRA) is put back on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from uti.config import from_dict, to_dict
from uti.errors import HashMismatchError, MissingAssetError
from uti.hashing import hash_json, hash_tensors
from uti.io import atomic_save_safetensors, atomic_write_json

from .errors import ConnectorError, TowerMismatchError, WidthMismatchError
from .inject import ImageTokenIds
from .vlm import Connector, ConnectorConfig, ContinuousVLM, add_lora

__all__ = ["MANIFEST", "WEIGHTS", "LORA_WEIGHTS", "save_connector", "read_manifest", "load_connector"]

MANIFEST, WEIGHTS, LORA_WEIGHTS = "connector.json", "connector.safetensors", "lora.safetensors"
FORMAT = "uti-connector"


def _llm_identity(llm: torch.nn.Module) -> dict[str, Any]:
    cfg = llm.config
    return {
        "name": str(getattr(cfg, "_name_or_path", "") or ""),
        "model_type": str(getattr(cfg, "model_type", "")),
        "hidden_size": int(cfg.hidden_size),
        "vocab_size": int(cfg.vocab_size),
    }


def _lora_state(vlm: ContinuousVLM) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v for k, v in get_peft_model_state_dict(vlm.llm).items()}


def save_connector(
    vlm: ContinuousVLM, out_dir: str | Path, tower: dict[str, Any], *, space_hash: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the connector (and LoRA if present) of `vlm` to `out_dir`; `tower` is the tower's `abi()` dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if int(tower.get("hidden_size", vlm.connector.in_dim)) != vlm.connector.in_dim:
        raise WidthMismatchError(
            f"tower width {tower.get('hidden_size')} differs from the connector input width {vlm.connector.in_dim}"
        )
    tensors = {k: v.detach().cpu() for k, v in vlm.connector.state_dict().items()}
    atomic_save_safetensors(out / WEIGHTS, tensors, metadata={"format": FORMAT})
    lora = _lora_state(vlm) if vlm.lora else None
    if lora is not None:
        atomic_save_safetensors(out / LORA_WEIGHTS, lora, metadata={"format": FORMAT})
    from . import __version__ as toolkit  # the distribution is `uti-toolkit`; "uti" was never found
    manifest = {
        "format": FORMAT,
        "schema": 1,
        "toolkit_version": toolkit,
        "stage": "lora" if lora is not None else "connector",
        "connector": to_dict(vlm.connector.config),
        "tower": dict(tower),
        "tower_hash": hash_json(tower),
        "llm": _llm_identity(vlm.llm),
        "image_ids": to_dict(vlm.ids),
        "token_space_hash": space_hash,
        "lora": vlm.lora,
        "tensors_hash": hash_tensors(tensors),
        "lora_hash": hash_tensors(lora) if lora is not None else None,
        "extra": extra or {},
    }
    atomic_write_json(out / MANIFEST, manifest)  # written last: a folder with a manifest is complete
    return out


def read_manifest(ckpt_dir: str | Path) -> dict[str, Any]:
    """The manifest of a connector checkpoint folder (checked for format)."""
    path = Path(ckpt_dir) / MANIFEST
    if not path.is_file():
        raise MissingAssetError(f"{path} not found; pass a folder written by save_connector")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConnectorError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConnectorError(f"{path} is not a connector manifest (format must be {FORMAT!r})")
    return manifest


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
    for key in ("hidden_size", "vocab_size"):
        if want[key] != got[key]:
            raise TowerMismatchError(
                f"connector {where} was trained on LLM {want['name']!r} with {key}={want[key]} but the given LLM "
                f"{got['name']!r} has {key}={got[key]}; load the base LLM it was trained on"
            )


def load_connector(
    ckpt_dir: str | Path, llm: torch.nn.Module, tower: dict[str, Any] | None = None, *, space_hash: str | None = None
) -> ContinuousVLM:
    """Base `llm` + connector checkpoint (+ LoRA) -> a `ContinuousVLM` in eval mode ready to `generate`.

    `tower` (the tower's `abi()`) and `space_hash` are checked against the manifest when given.
    """
    where = Path(ckpt_dir)
    manifest = read_manifest(where)
    _check_tower(manifest, tower, where)
    _check_llm(manifest, llm, where)
    if space_hash is not None and manifest.get("token_space_hash") not in (None, space_hash):
        raise HashMismatchError(
            f"connector {where} was trained for token space {manifest['token_space_hash']} but the given space "
            f"is {space_hash}; use the token space it was trained with"
        )
    tensors = load_file(str(where / WEIGHTS))
    if hash_tensors(tensors) != manifest["tensors_hash"]:
        raise HashMismatchError(f"{where / WEIGHTS} does not match the hash in its manifest; the file is damaged")
    connector = Connector(from_dict(ConnectorConfig, manifest["connector"], where=f"{where / MANIFEST} connector"))
    connector.load_state_dict(tensors, strict=True)
    vlm = ContinuousVLM(llm, connector, from_dict(ImageTokenIds, manifest["image_ids"]))
    if manifest.get("lora"):
        from peft import set_peft_model_state_dict

        lora = load_file(str(where / LORA_WEIGHTS))
        if hash_tensors(lora) != manifest["lora_hash"]:
            raise HashMismatchError(f"{where / LORA_WEIGHTS} does not match the hash in its manifest; damaged file")
        add_lora(vlm, **manifest["lora"])
        set_peft_model_state_dict(vlm.llm, lora)
    return vlm.eval()
