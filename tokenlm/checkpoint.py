"""Trainable-rows checkpoints: save the new rows (and any other trained tensors) small, load them back safely.

A checkpoint folder holds three files, each written atomically (temp file + rename), manifest last:

* ``trainable_rows.safetensors``: ``embed_rows`` (N, D), ``head_rows`` (N, D) when the head is untied, and
  for stages `lora`/`full` every other trained parameter under its model name.
* ``trainable_rows.json``: the manifest (see `_manifest`): base model id, base fingerprint, base vocab size,
  row range, total, tied, dtype, token-space name and hash, stage, init, toolkit version, the trained
  parameter names (checked against `requires_grad` on save and load), the LoRA config for stage `lora`,
  and `tensors_hash` (`uti.hashing.hash_tensors` of the saved tensors).
* ``token_space.json``: a copy of the space the rows belong to.

Base fingerprint: `hash_tensors` of a strided sample of the base embedding (every ceil(V/1024)-th row plus
the last row, cast to float32 so a bf16 and an fp32 load of the same weights agree) together with the
full shape. It costs nothing even for a 151936 x 4096 matrix and tells apart any two differently trained
bases; untied heads get the same fingerprint of the head weight.

`load_rows` refuses, with one line each: another base (vocab size, fingerprint, tied-ness), rows of another
space (both hashes, both files), a truncated or edited safetensors file, dtype or shape mismatches.
The older ``trainable_rows.pt`` layout (keys row_start, row_end, base_llm, embeddings, lm_head, dtype) is
read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from uti.errors import HashMismatchError, UTIError
from uti.hashing import hash_tensors
from uti.io import atomic_save_safetensors, atomic_write_json
from uti.space import TokenSpace

from . import __version__
from .model import apply_stage, grow_model, grown_modules, growth_info, trainable_row_params, trained_parameter_names

__all__ = ["CheckpointError", "ROWS_FILE", "MANIFEST_FILE", "SPACE_FILE", "LEGACY_FILE", "base_fingerprint",
           "save_rows", "load_rows", "read_manifest", "checkpoint_space", "load_legacy_rows"]

FORMAT = "tokenlm-trainable-rows"
ROWS_FILE, MANIFEST_FILE, SPACE_FILE = "trainable_rows.safetensors", "trainable_rows.json", "token_space.json"
LEGACY_FILE = "trainable_rows.pt"
_SAMPLE_ROWS = 1024


class CheckpointError(UTIError, ValueError):
    """A rows checkpoint is missing, damaged, or does not fit the base model or token space."""


def base_fingerprint(weight: torch.Tensor) -> str:
    """Cheap content fingerprint of a (V, D) base matrix: strided row sample (float32) + shape."""
    v = weight.shape[0]
    step = max(1, -(-v // _SAMPLE_ROWS))
    idx = torch.cat([torch.arange(0, v, step), torch.tensor([v - 1])])
    sample = weight.detach()[idx.to(weight.device)].float().cpu()
    return hash_tensors({"sample": sample, "shape": torch.tensor(list(weight.shape))})


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _saved_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Tensors to save (rows under canonical keys, other trained params under their names) and trained names."""
    rows = trainable_row_params(model)
    row_ids = {id(p): k for k, p in rows.items()}
    tensors = {k: p.detach() for k, p in rows.items()}
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in row_ids:
            tensors[name] = p.detach()
    return tensors, trained_parameter_names(model)


def _manifest(model: nn.Module, space: TokenSpace, tensors: dict, trained: list[str], base_model: str | None) -> dict:
    info = growth_info(model)
    emb, head = grown_modules(model)
    stage = info.get("stage", "rows")
    lora = None
    if stage == "lora":
        cfg = next(iter(model.peft_config.values()))
        lora = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.to_dict().items()
                if k in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora")}
    return {
        "format": FORMAT, "version": 1, "toolkit_version": __version__,
        "base_model": base_model or info["base_model"],
        "base_fingerprint": base_fingerprint(emb.base.weight),
        "base_head_fingerprint": None if head.tied else base_fingerprint(head.base_weight),
        "base_vocab_size": info["base_vocab_size"], "row_start": info["row_start"], "row_end": info["row_end"],
        "total": info["total"], "tied": info["tied"], "dtype": info["dtype"], "hidden_size": emb.embedding_dim,
        "token_space": {"name": space.name, "hash": space.hash,
                        "source": str(space.path.resolve()) if space.path is not None else None},
        "stage": stage, "init": info.get("init"),
        "trained": trained, "lora_config": lora,
        "tensors": {k: {"shape": list(t.shape), "dtype": _dtype_name(t.dtype)} for k, t in tensors.items()},
        "tensors_hash": hash_tensors(tensors),
    }


def save_rows(model: nn.Module, out_dir: str | Path, space: TokenSpace, base_model: str | None = None) -> Path:
    """Write the rows checkpoint of a grown model to `out_dir`; returns the folder.

    The saved tensors are exactly the parameters with `requires_grad` (rows under canonical names).
    """
    info = growth_info(model)
    if info["token_space_hash"] != space.hash:
        raise HashMismatchError(f"model was grown for token space {info['token_space_hash']} but saving with "
                                f"space {space.name!r} ({space.path or 'in memory'}) hash {space.hash}")
    tensors, trained = _saved_tensors(model)
    row_names = {n for n, p in model.named_parameters() if any(p is r for r in trainable_row_params(model).values())}
    if not row_names <= set(trained):
        raise CheckpointError(f"rows {sorted(row_names - set(trained))} do not require grad; nothing coherent to save "
                              "(call tokenlm.model.apply_stage first)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(model, space, tensors, trained, base_model)
    atomic_save_safetensors(out / ROWS_FILE, tensors, metadata={"format": FORMAT, "token_space_hash": space.hash})
    atomic_write_json(out / SPACE_FILE, space.to_json())
    atomic_write_json(out / MANIFEST_FILE, manifest)
    return out


def read_manifest(ckpt_dir: str | Path) -> dict:
    """The manifest of a rows checkpoint, with a one-line error when missing or malformed."""
    path = Path(ckpt_dir) / MANIFEST_FILE
    if not path.is_file():
        legacy = " (it holds the older trainable_rows.pt: use load_legacy_rows / `tokenlm import-rows`)" \
            if (Path(ckpt_dir) / LEGACY_FILE).is_file() else ""
        raise CheckpointError(f"{ckpt_dir} is not a rows checkpoint: no {MANIFEST_FILE}{legacy}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read manifest: {err}") from None
    missing = [k for k in ("format", "base_vocab_size", "row_start", "row_end", "tied", "dtype", "token_space",
                           "stage", "trained", "tensors", "tensors_hash", "base_fingerprint") if k not in data]
    if data.get("format") != FORMAT or missing:
        raise CheckpointError(f"{path}: not a {FORMAT} manifest (missing {', '.join(missing) or 'format'})")
    return data


def checkpoint_space(ckpt_dir: str | Path, manifest: dict | None = None) -> TokenSpace:
    """The checkpoint's space: the original file it was saved from when that still exists with the same
    hash (so relative asset paths resolve), else the copy in the folder."""
    ckpt_dir = Path(ckpt_dir)
    manifest = manifest or read_manifest(ckpt_dir)
    source = manifest["token_space"].get("source")
    if source and Path(source).is_file():
        try:
            original = TokenSpace.from_file(source)
            if original.hash == manifest["token_space"]["hash"]:
                return original
        except UTIError:
            pass  # edited or broken since: fall back to the copy
    return TokenSpace.from_file(ckpt_dir / SPACE_FILE)


def _check_space(manifest: dict, ckpt_dir: Path, space: TokenSpace | None) -> TokenSpace:
    """The space to use; refuses a checkpoint of another space, showing both hashes and both files."""
    own = TokenSpace.from_file(ckpt_dir / SPACE_FILE) if (ckpt_dir / SPACE_FILE).is_file() else None
    recorded = manifest["token_space"]["hash"]
    if own is not None and own.hash != recorded:
        raise HashMismatchError(f"{ckpt_dir / SPACE_FILE} has hash {own.hash} but {ckpt_dir / MANIFEST_FILE} "
                                f"records {recorded}; the checkpoint folder was edited")
    space = space or own
    if space is None:
        raise CheckpointError(f"{ckpt_dir} has no {SPACE_FILE}; pass the token space explicitly")
    if space.hash != recorded:
        raise HashMismatchError(f"rows in {ckpt_dir} belong to token space hash {recorded} ({ckpt_dir / SPACE_FILE}), "
                                f"not to space {space.name!r} hash {space.hash} ({space.path or 'in memory'})")
    return space


def _check_base(model: nn.Module, manifest: dict, where: Path) -> None:
    info = growth_info(model)
    emb, head = grown_modules(model)
    checks = [
        ("base vocab size", manifest["base_vocab_size"], info["base_vocab_size"]),
        ("row range", [manifest["row_start"], manifest["row_end"]], [info["row_start"], info["row_end"]]),
        ("tied head", manifest["tied"], info["tied"]),
        ("base embedding fingerprint", manifest["base_fingerprint"], base_fingerprint(emb.base.weight)),
    ]
    if not info["tied"] and manifest.get("base_head_fingerprint"):
        checks.append(("base head fingerprint", manifest["base_head_fingerprint"], base_fingerprint(head.base_weight)))
    if manifest["dtype"] != info["dtype"]:
        raise CheckpointError(f"{where} holds {manifest['dtype']} rows but the base model is loaded as "
                              f"{info['dtype']}; "
                              f"load the base with dtype {manifest['dtype']}")
    for what, want, got in checks:
        if want != got:
            raise CheckpointError(f"{where} was trained on another base model ({manifest.get('base_model')!r}): "
                                  f"{what} {want} != {got} of the loaded base; load the base the rows were made for")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several types for truncated/garbled headers
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({str(err).splitlines()[0]})") from None


def _prepare_stage(model: nn.Module, manifest: dict, where: Path) -> nn.Module:
    stage = manifest["stage"]
    lora_config = None
    if stage == "lora" and manifest.get("lora_config"):
        from peft import LoraConfig

        lora_config = LoraConfig(**manifest["lora_config"])
    model = apply_stage(model, stage, lora_config)
    trained = trained_parameter_names(model)
    if trained != manifest["trained"]:
        extra, lack = sorted(set(trained) - set(manifest["trained"])), sorted(set(manifest["trained"]) - set(trained))
        raise CheckpointError(f"{where}: trained parameters differ from the model's requires_grad for stage {stage!r} "
                              f"(only in model: {extra[:3]}, only in checkpoint: {lack[:3]})")
    return model


def _targets(model: nn.Module) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    return {**trainable_row_params(model), **params}


def load_rows(model: nn.Module, ckpt_dir: str | Path, space: TokenSpace | None = None) -> nn.Module:
    """Patch the rows (and other trained tensors) of `ckpt_dir` onto `model` and return the model to use.

    `model` is the base model (it is grown here) or an already grown one; `space` defaults to the
    checkpoint's own copy. Every mismatch is refused with a `CheckpointError`/`HashMismatchError`.
    """
    ckpt_dir = Path(ckpt_dir)
    manifest = read_manifest(ckpt_dir)
    space = _check_space(manifest, ckpt_dir, space)
    try:
        grown_modules(model)
    except UTIError:
        model = grow_model(model, space)
    _check_base(model, manifest, ckpt_dir)
    tensors = _read_tensors(ckpt_dir / ROWS_FILE)
    if set(tensors) != set(manifest["tensors"]) or hash_tensors(tensors) != manifest["tensors_hash"]:
        raise CheckpointError(f"{ckpt_dir / ROWS_FILE} does not match its manifest (tensors hash "
                              f"{hash_tensors(tensors)} != recorded {manifest['tensors_hash']}): edited or damaged")
    model = _prepare_stage(model, manifest, ckpt_dir)
    targets = _targets(model)
    with torch.no_grad():
        for key, t in tensors.items():
            dst = targets.get(key)
            if dst is None:
                raise CheckpointError(f"{ckpt_dir / ROWS_FILE}: tensor {key!r} has no parameter in the model")
            if dst.shape != t.shape or dst.dtype != t.dtype:
                raise CheckpointError(f"{ckpt_dir / ROWS_FILE}: {key} is {_dtype_name(t.dtype)} {list(t.shape)}, the "
                                      f"model expects {_dtype_name(dst.dtype)} {list(dst.shape)}")
            dst.copy_(t)
    return model


def load_legacy_rows(model: nn.Module, pt_path: str | Path, space: TokenSpace) -> nn.Module:
    """Patch an older ``trainable_rows.pt`` (row_start, row_end, base_llm, embeddings, lm_head, dtype) onto `model`.

    The old layout records no space hash or fingerprint, so only the row range, shapes and dtype can be
    checked: row_start must equal the base vocab size and the rows must cover the space's new IDs
    (rows beyond them, i.e. padding rows, carry no meaning and are dropped).
    """
    pt_path = Path(pt_path)
    try:
        data = torch.load(str(pt_path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle refused (not weights-only) or damaged file
        raise CheckpointError(f"{pt_path}: cannot read as a weights-only torch file "
                              f"({str(err).splitlines()[0]})") from None
    need = {"row_start", "row_end", "base_llm", "embeddings", "lm_head", "dtype"}
    if not isinstance(data, dict) or not need <= set(data):
        raise CheckpointError(f"{pt_path}: expected keys {', '.join(sorted(need))}")
    try:
        grown_modules(model)
    except UTIError:
        model = grow_model(model, space)
    info = growth_info(model)
    start, end = int(data["row_start"]), int(data["row_end"])
    n = info["row_end"] - info["row_start"]
    if start != info["row_start"] or not n <= end - start <= info["total"] - start:
        raise CheckpointError(f"{pt_path}: rows [{start}, {end}) do not fit base vocab {info['base_vocab_size']} and "
                              f"space {space.name!r} new IDs [{info['row_start']}, {info['row_end']})")
    rows = trainable_row_params(model)
    pairs = [("embeddings", "embed_rows")] + ([("lm_head", "head_rows")] if "head_rows" in rows else [])
    if "head_rows" not in rows and data["lm_head"] is not None and not torch.equal(data["lm_head"], data["embeddings"]):
        raise CheckpointError(f"{pt_path}: has separate lm_head rows but the base model's head is tied")
    with torch.no_grad():
        for old, new in pairs:
            t = data[old]
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[0] != end - start \
                    or t.shape[1] != rows[new].shape[1]:
                raise CheckpointError(f"{pt_path}: {old} has shape {getattr(t, 'shape', None)}, expected "
                                      f"({end - start}, {rows[new].shape[1]})")
            if str(data["dtype"]).removeprefix("torch.") != _dtype_name(t.dtype) or t.dtype != rows[new].dtype:
                raise CheckpointError(f"{pt_path}: {old} is {_dtype_name(t.dtype)} (file says {data['dtype']}), the "
                                      f"model expects {_dtype_name(rows[new].dtype)}")
            rows[new].copy_(t[:n])
    model.tokenlm_growth["base_model"] = str(data["base_llm"])
    return apply_stage(model, "rows")

