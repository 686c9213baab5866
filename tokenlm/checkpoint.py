"""Trainable-rows checkpoints: save the new rows (and any other trained tensors) small, load them back safely.

A checkpoint folder holds (see `tokenlm.ckpt_store` for why the data files carry content hashes in their names):

* ``trainable_rows.<hash>.safetensors``: ``embed_rows`` (N, D), ``head_rows`` (N, D) when the head is untied,
  and for stages `lora`/`full` every other trained parameter under its model name.
* ``token_space.<hash>.json``: a copy of the space the rows belong to.
* ``trainable_rows.json``: the manifest (schema `tokenlm.rows_manifest`, written last: the commit point):
  base model id, base fingerprint, base vocab size, row range, total, tied, dtype, hidden size, token-space
  name and hash, stage, init, toolkit version, the trained parameter names (checked against
  `requires_grad` on save and load), the LoRA config for stage `lora`, the tensor shapes and dtypes,
  `tensors_hash` (`uti.hashing.hash_tensors`), the data file names with their hashes, and `content_hash`
  over all of it, so no field can be edited unnoticed.

Saving over an existing checkpoint is crash-safe: a kill at any point leaves the old or the new one.

Base fingerprint: `tokenlm.fingerprint.model_fingerprint` of the whole grown base (every parameter and
buffer: name, shape, a bounded bf16-rounded value sample; the new rows left out), so a base with another
`q_proj` is refused while a float32 and a bfloat16 load of the same weights agree. For stage `full`,
whose checkpoint holds every parameter, only names and shapes count.

`load_rows` refuses, with one line each and before building anything: an edited manifest or data file,
another base (vocab size, hidden size, fingerprint, tied-ness), rows of another space (both hashes, both
files), a truncated or edited safetensors file, dtype or shape mismatches, sizes beyond the base's.
The older ``trainable_rows.pt`` layout (keys row_start, row_end, base_llm, embeddings, lm_head, dtype) is
read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from uti.errors import HashMismatchError, UTIError
from uti.hashing import hash_json, hash_tensors
from uti.io import atomic_save_safetensors, atomic_write_json, portable_ref, relative_ref, resolve_ref
from uti.space import TokenSpace

from . import __version__
from .ckpt_store import commit, content_name, data_path, read_json, read_tensors
from .fingerprint import model_fingerprint
from .model import apply_stage, grow_model, grown_modules, growth_info, trainable_row_params, trained_parameter_names
from .rows_manifest import FORMAT, VERSION, content_hash, parse_manifest

__all__ = ["CheckpointError", "ROWS_STEM", "MANIFEST_FILE", "SPACE_STEM", "LEGACY_FILE", "base_fingerprint",
           "save_rows", "load_rows", "read_manifest", "checkpoint_space", "check_space", "recorded_base",
           "load_legacy_rows", "rows_file"]

ROWS_STEM, SPACE_STEM, MANIFEST_FILE = "trainable_rows", "token_space", "trainable_rows.json"
LEGACY_FILE = "trainable_rows.pt"
_BOUND = 3  # saved tensors beyond the rows may hold at most this many times the base's parameters (LoRA r <= D)


class CheckpointError(UTIError, ValueError):
    """A rows checkpoint is missing, damaged, or does not fit the base model or token space."""


def base_fingerprint(model: nn.Module, stage: str = "rows") -> str:
    """Fingerprint of the base inside grown `model` (new rows excluded; names and shapes only for `full`)."""
    return model_fingerprint(model, skip=trainable_row_params(model).values(), param_values=stage != "full")


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


def _lora_config(model: nn.Module) -> dict | None:
    cfg = next(iter(model.peft_config.values()))
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.to_dict().items()
            if k in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora")}


def _source_hint(space: TokenSpace, out_dir: str | Path) -> str | None:
    """Where the space file is, relative to the checkpoint folder, so that a custom space's relative asset
    paths still resolve when the two folders move together; never absolute (checkpoints are shared)."""
    return None if space.path is None else relative_ref(space.path, out_dir)


def recorded_base(ckpt_dir: str | Path, manifest: dict) -> str:
    """The base model a checkpoint records, loadable from here: a hub id, or a local folder (recorded relative
    to the checkpoint folder; older manifests hold an absolute path). '' when none is recorded."""
    return resolve_ref(manifest.get("base_model") or "", ckpt_dir)


def _manifest(model: nn.Module, space: TokenSpace, tensors: dict, trained: list[str], base_model: str | None,
              files: dict[str, dict], out_dir: str | Path) -> dict:
    info = growth_info(model)
    emb, _ = grown_modules(model)
    stage = info.get("stage", "rows")
    manifest = {
        "format": FORMAT, "version": VERSION, "toolkit_version": __version__,
        "base_model": portable_ref(base_model or info["base_model"], out_dir),  # no absolute path
        "base_fingerprint": base_fingerprint(model, stage),
        "base_vocab_size": info["base_vocab_size"], "row_start": info["row_start"], "row_end": info["row_end"],
        "total": info["total"], "tied": info["tied"], "dtype": info["dtype"], "hidden_size": emb.embedding_dim,
        "token_space": {"name": space.name, "hash": space.hash, "source": _source_hint(space, out_dir)},
        "stage": stage, "init": info.get("init"),
        "trained": trained, "lora_config": _lora_config(model) if stage == "lora" else None,
        "tensors": {k: {"shape": list(t.shape), "dtype": _dtype_name(t.dtype)} for k, t in tensors.items()},
        "tensors_hash": files["tensors"]["hash"], "files": files,
    }
    manifest["content_hash"] = content_hash(manifest)
    parse_manifest(manifest, "manifest being saved", CheckpointError)  # the saver obeys the reader's schema
    return manifest


def save_rows(model: nn.Module, out_dir: str | Path, space: TokenSpace, base_model: str | None = None) -> Path:
    """Write the rows checkpoint of a grown model to `out_dir` (crash-safe over an old one); returns the folder.

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
    space_json = space.to_json()
    t_hash, s_hash = hash_tensors(tensors), hash_json(space_json)
    files = {"tensors": {"name": content_name(ROWS_STEM, t_hash, ".safetensors"), "hash": t_hash},
             "space": {"name": content_name(SPACE_STEM, s_hash, ".json"), "hash": s_hash}}
    manifest = _manifest(model, space, tensors, trained, base_model, files, out_dir)
    meta = {"format": FORMAT}  # one key: a 2+-key map is written in random order (uti.io.atomic_save_safetensors)
    return commit(out_dir, [
        (ROWS_STEM, ".safetensors", t_hash, lambda p: atomic_save_safetensors(p, tensors, metadata=meta)),
        (SPACE_STEM, ".json", s_hash, lambda p: atomic_write_json(p, space_json)),
    ], MANIFEST_FILE, manifest)


def read_manifest(ckpt_dir: str | Path) -> dict:
    """The manifest of a rows checkpoint, content hash and schema checked; one-line error when missing or bad."""
    path = Path(ckpt_dir) / MANIFEST_FILE
    if not path.is_file():
        legacy = " (it holds the older trainable_rows.pt: use load_legacy_rows / `tokenlm rows import`)" \
            if (Path(ckpt_dir) / LEGACY_FILE).is_file() else ""
        raise CheckpointError(f"{ckpt_dir} is not a rows checkpoint: no {MANIFEST_FILE}{legacy}")
    data = read_json(path, CheckpointError)
    parse_manifest(data, str(path), CheckpointError)
    return data


def rows_file(ckpt_dir: str | Path) -> Path:
    """The tensors file the manifest of `ckpt_dir` names (content-named, so look it up here)."""
    ckpt_dir = Path(ckpt_dir)
    name = read_manifest(ckpt_dir)["files"]["tensors"]["name"]
    return data_path(ckpt_dir, name, ROWS_STEM, ".safetensors", CheckpointError)


def _own_space(ckpt_dir: Path, manifest: dict) -> TokenSpace:
    """The checkpoint's copy of its space, its file hash checked before it is parsed."""
    ref = manifest["files"]["space"]
    path = data_path(ckpt_dir, ref["name"], SPACE_STEM, ".json", CheckpointError)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint folder is incomplete")
    data = read_json(path, CheckpointError)
    if hash_json(data) != ref["hash"]:
        raise HashMismatchError(f"{path} has hash {hash_json(data)} but {ckpt_dir / MANIFEST_FILE} records "
                                f"{ref['hash']}; the checkpoint folder was edited")
    return TokenSpace.from_json(data, path)


def checkpoint_space(ckpt_dir: str | Path, manifest: dict | None = None) -> TokenSpace:
    """The checkpoint's space, so that its relative asset paths resolve: the installed space of the recorded
    name when it has the recorded hash, else the space file at `source` (relative to the checkpoint folder;
    older manifests hold an absolute path) when it has that hash, else the copy in the folder.

    A name read from a file only ever opens a registered space (`TokenSpace.named`); `source` is only a hint:
    the file it points to is used only when its hash is the recorded one."""
    ckpt_dir = Path(ckpt_dir)
    manifest = manifest or read_manifest(ckpt_dir)
    ref = manifest["token_space"]
    for candidate in (lambda: TokenSpace.named(ref["name"]),
                      lambda: TokenSpace.from_file(ckpt_dir / ref["source"]) if ref.get("source") else None):
        try:
            space = candidate()
        except (UTIError, OSError):
            continue  # not installed here, moved, edited or broken: the next candidate
        if space is not None and space.hash == ref["hash"]:
            return space
    return _own_space(ckpt_dir, manifest)


def check_space(ckpt_dir: str | Path, manifest: dict, space: TokenSpace | None = None) -> TokenSpace:
    """The space to use (`space`, else the folder's copy, its file hash checked); refuses a checkpoint of
    another space, showing both hashes and both files."""
    return _check_space(manifest, Path(ckpt_dir), space)


def _check_space(manifest: dict, ckpt_dir: Path, space: TokenSpace | None) -> TokenSpace:
    own = _own_space(ckpt_dir, manifest)
    recorded = manifest["token_space"]["hash"]
    if own.hash != recorded:
        raise HashMismatchError(f"{own.path} has hash {own.hash} but {ckpt_dir / MANIFEST_FILE} "
                                f"records {recorded}; the checkpoint folder was edited")
    space = space or own
    if space.hash != recorded:
        raise HashMismatchError(f"rows in {ckpt_dir} belong to token space hash {recorded} ({own.path}), "
                                f"not to space {space.name!r} hash {space.hash} ({space.path or 'in memory'})")
    return space


def _check_base(model: nn.Module, manifest: dict, where: Path) -> None:
    """Refuse another base (vocab, width, tied-ness, dtype, fingerprint) and sizes beyond the base's."""
    info = growth_info(model)
    emb, _ = grown_modules(model)
    checks = [
        ("base vocab size", manifest["base_vocab_size"], info["base_vocab_size"]),
        ("row range", [manifest["row_start"], manifest["row_end"]], [info["row_start"], info["row_end"]]),
        ("hidden size", manifest["hidden_size"], emb.embedding_dim),
        ("tied head", manifest["tied"], info["tied"]),
    ]
    for what, want, got in checks:
        if want != got:
            raise CheckpointError(f"{where} was trained on another base model ({manifest.get('base_model')!r}): "
                                  f"{what} {want} != {got} of the loaded base; load the base the rows were made for")
    if manifest["dtype"] != info["dtype"]:
        raise CheckpointError(f"{where} holds {manifest['dtype']} rows but the base model is loaded as "
                              f"{info['dtype']}; load the base with dtype {manifest['dtype']}")
    got = base_fingerprint(model, manifest["stage"])
    if manifest["base_fingerprint"] != got:
        raise CheckpointError(f"{where} was trained on another base model ({manifest.get('base_model')!r}): "
                              f"base fingerprint {manifest['base_fingerprint']} != {got} of the loaded base; "
                              "load the base the rows were made for")
    base_numel = sum(p.numel() for p in model.parameters())
    saved = sum(_numel(spec["shape"]) for spec in manifest["tensors"].values())
    if saved > _BOUND * base_numel:
        raise CheckpointError(f"{where} lists {saved} saved values, more than {_BOUND} x the base's {base_numel} "
                              "parameters; the manifest is not from a real training run")


def _numel(shape: list[int]) -> int:
    from math import prod

    return prod(shape)


def _prepare_stage(model: nn.Module, manifest: dict, where: Path) -> nn.Module:
    stage = manifest["stage"]
    lora_config = None
    try:
        if stage == "lora":
            from peft import LoraConfig

            lora_config = LoraConfig(**manifest["lora_config"])
        model = apply_stage(model, stage, lora_config)
    except UTIError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # peft: unknown target modules and the like
        raise CheckpointError(f"{where}: cannot apply stage {stage!r} with its LoRA config "
                              f"({str(err).splitlines()[0][:160]})") from None
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
    checkpoint's own copy. Order: manifest (content hash, schema), space, base (fingerprint, sizes),
    tensors file (size, shapes, hash), and only then the LoRA modules are built and the tensors copied.
    Every mismatch is refused with a `CheckpointError`/`HashMismatchError`.
    """
    ckpt_dir = Path(ckpt_dir)
    manifest = read_manifest(ckpt_dir)
    space = _check_space(manifest, ckpt_dir, space)
    try:
        grown_modules(model)
    except UTIError:
        model = grow_model(model, space)
    _check_base(model, manifest, ckpt_dir)
    path = data_path(ckpt_dir, manifest["files"]["tensors"]["name"], ROWS_STEM, ".safetensors", CheckpointError)
    specs = {k: (v["shape"], v["dtype"]) for k, v in manifest["tensors"].items()}
    tensors = read_tensors(path, specs, manifest["tensors_hash"], CheckpointError)
    model = _prepare_stage(model, manifest, ckpt_dir)
    targets = _targets(model)
    with torch.no_grad():
        for key, t in tensors.items():
            dst = targets.get(key)
            if dst is None:
                raise CheckpointError(f"{path}: tensor {key!r} has no parameter in the model")
            if dst.shape != t.shape or dst.dtype != t.dtype:
                raise CheckpointError(f"{path}: {key} is {_dtype_name(t.dtype)} {list(t.shape)}, the "
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

