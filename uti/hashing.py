"""Content hashes: xxh3-128 of canonical JSON, bytes, files and tensors.

Hashes are 32 lowercase hex digits. Canonical JSON is `json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)` encoded as UTF-8, so key order and whitespace never change a hash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import xxhash

__all__ = ["canonical_json", "hash_json", "hash_bytes", "hash_file", "hash_tensors", "hash_safetensors"]

_CHUNK = 1 << 22  # 4 MiB reads keep file hashing at disk speed with bounded memory


def canonical_json(obj: Any) -> bytes:
    """The canonical UTF-8 JSON encoding of `obj` (sorted keys, no insignificant whitespace)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def hash_json(obj: Any) -> str:
    """xxh3-128 hex of the canonical JSON of `obj`."""
    return xxhash.xxh3_128_hexdigest(canonical_json(obj))


def hash_bytes(data: bytes) -> str:
    """xxh3-128 hex of raw bytes."""
    return xxhash.xxh3_128_hexdigest(data)


def hash_file(path: str | Path) -> str:
    """xxh3-128 hex of a file's bytes, read in chunks."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def hash_tensors(tensors: Mapping[str, Any]) -> str:
    """xxh3-128 hex over (name, dtype, shape, bytes) of each tensor in sorted name order.

    Independent of how the tensors are stored (one file, shards, in memory), so a re-saved or re-sharded
    checkpoint keeps its hash while any changed value, dtype or shape changes it.
    """
    import torch

    h = xxhash.xxh3_128()
    for name in sorted(tensors):
        t = tensors[name]
        t = t.detach().to("cpu").contiguous() if isinstance(t, torch.Tensor) else torch.as_tensor(t)
        h.update(canonical_json([name, str(t.dtype), list(t.shape)]))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def hash_safetensors(path: str | Path) -> str:
    """`hash_tensors` of a `.safetensors` file or of all `*.safetensors` files in a directory."""
    from safetensors import safe_open

    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {path}")
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return hash_tensors(tensors)
