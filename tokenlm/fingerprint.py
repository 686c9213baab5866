"""Cheap, dtype-independent content fingerprint of a whole model (every parameter and buffer).

`model_fingerprint(model)` hashes, for every parameter and buffer in name order: its name, its shape and
a strided sample of at most `SAMPLES` of its values, rounded to bfloat16 first. So:

* covered: every tensor's presence, name and shape, and the values at the sampled positions (positions
  `i * 2654435761 mod numel`, spread over rows and columns). Any fine-tune, re-initialisation or swapped
  layer changes thousands of sampled values and so the fingerprint.
* not covered: values between sampled positions (a deliberate single-weight edit can go unnoticed; this
  is a consistency check against loading the wrong base, not a signature), the config, the tokenizer.
* dtype-independent: a float32 and a bfloat16 load of the same weights give the same fingerprint (both
  round to the same bfloat16 values; bf16 -> fp32 -> bf16 is exact). A float16 load can differ (double
  rounding through float16).
* cheap: at most `SAMPLES` values per tensor (see `scripts`/report: milliseconds for Qwen3-0.6B).

Names are canonical across wrappers: a PEFT model is unwrapped, LoRA adapter tensors (`lora_*`) are
skipped and `.base_layer.` is dropped, so a model fingerprints the same before and after `get_peft_model`.
"""

from __future__ import annotations

from typing import Iterable

import torch
import xxhash
from torch import nn

from uti.hashing import canonical_json

__all__ = ["model_fingerprint", "SAMPLES"]

SAMPLES = 1024
_STRIDE = 2654435761  # a prime near 2**32 / golden ratio: scattered positions, no aliasing with row lengths


def _sample(t: torch.Tensor) -> bytes:
    flat = t.detach().reshape(-1)
    n = flat.numel()
    if n > SAMPLES:
        idx = (torch.arange(SAMPLES, dtype=torch.int64) * _STRIDE) % n
        flat = flat[idx.to(flat.device)]
    if flat.is_floating_point():
        flat = flat.to(torch.bfloat16)
    elif flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.cpu().contiguous().view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _canonical(name: str) -> str | None:
    if "lora_" in name:
        return None
    return name.replace(".base_layer.", ".")


def model_fingerprint(model: nn.Module, skip: Iterable[torch.Tensor] = (), param_values: bool = True) -> str:
    """xxh3-128 hex over (name, shape, bf16 value sample) of every parameter and buffer; see module doc.

    `skip`: tensors left out entirely (e.g. new rows that training changes). `param_values=False`
    hashes parameter names and shapes only (buffers keep their values), for models whose every
    parameter trains (stage `full`): the base then only has to have the same architecture.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    skipped = {id(t) for t in skip}
    entries: dict[str, tuple[torch.Tensor, bool]] = {}
    for name, p in inner.named_parameters():
        key = _canonical(name)
        if key is not None and id(p) not in skipped:
            entries[key] = (p, param_values)
    for name, b in inner.named_buffers():
        key = _canonical(name)
        if key is not None and id(b) not in skipped:
            entries[key] = (b, True)
    h = xxhash.xxh3_128()
    for key in sorted(entries):
        t, values = entries[key]
        h.update(canonical_json([key, list(t.shape)]))
        if values:
            h.update(_sample(t))
    return h.hexdigest()
