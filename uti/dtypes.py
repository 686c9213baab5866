"""The compute dtype codes were made in: recorded in every encoded item's meta, checked where codes are used.

Codes are nearest-codebook indices of model features (image: SigLIP patch features, quantised by the VQ; audio:
the codec's residual quantiser), so the arithmetic precision of the model can change them: in bfloat16 a
fraction of image codes flips against float32 (`scripts/bench_dtype_flips.py` measures it). A token space's
codes are defined in float32 (`DEFAULT_COMPUTE_DTYPE`); another dtype is the user's opt-in (`uti encode
--dtype`). Each encoded item records its `compute_dtype` (the tower's or audio codec's weights dtype; the image
VQ always runs in float32), and decoding a document or training on shards of another dtype warns with one line
(`ComputeDtypeWarning`). Items without the field predate it and count as float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from .errors import UTIWarning

__all__ = ["COMPUTE_DTYPES", "DEFAULT_COMPUTE_DTYPE", "ComputeDtypeWarning", "dtype_name", "warn_compute_dtype"]

DEFAULT_COMPUTE_DTYPE = "float32"
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


class ComputeDtypeWarning(UTIWarning):
    """Codes were computed in a dtype other than the space's float32: some may differ from the reference codes."""


def dtype_name(dtype: Any) -> str:
    """"float32", "bfloat16", ... of a torch dtype (or its name)."""
    return str(dtype).removeprefix("torch.")


def warn_compute_dtype(metas: Iterable[Any], where: str) -> bool:
    """Warn once if any item meta records a compute dtype other than float32; True if it warned."""
    found = {m.get("compute_dtype") for m in metas if isinstance(m, dict)} - {None, DEFAULT_COMPUTE_DTYPE}
    if not found:
        return False
    names = ", ".join(sorted(str(d) for d in found))
    warnings.warn(ComputeDtypeWarning(
        f"{where}: codes were computed in {names}, not the space's {DEFAULT_COMPUTE_DTYPE}; some codes differ from "
        f"{DEFAULT_COMPUTE_DTYPE} ones (re-encode without --dtype for the reference codes)"), stacklevel=2)
    return True
