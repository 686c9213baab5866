"""Convert an original EnCodec checkpoint (facebookresearch/encodec `.th` state dict) to an HF-format folder.

The original module tree and transformers' port differ only in names, so conversion is a renaming of
state-dict keys, applied in order (facts checked against transformers' EnCodec port):

    encoder.model.N / decoder.model.N        -> encoder.layers.N / decoder.layers.N
    .conv.conv. / .convtr.convtr.           -> .conv.        (SConv1d / SConvTranspose1d wrappers)
    .conv.norm. / .convtr.norm.             -> .norm.        (time_group_norm models only)
    .weight_g / .weight_v                   -> .parametrizations.weight.original0 / original1
    quantizer.vq.layers.N._codebook.        -> quantizer.layers.N.codebook.

The checkpoint holds no config, so the architecture comes from a preset (`encodec_24khz`,
`encodec_48khz`) or an HF `config.json`. Loading is strict: a missing, unexpected or mis-shaped tensor is
an error naming it. The file is read with `torch.load(weights_only=True)` (no pickle code runs).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from ..errors import InputError

__all__ = ["PRESETS", "convert_encodec_checkpoint", "rename_original_key"]

_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^(encoder|decoder)\.model\.", r"\1.layers."),
    (r"\.conv\.conv\.", ".conv."),
    (r"\.convtr\.convtr\.", ".conv."),
    (r"\.(conv|convtr)\.norm\.", ".norm."),
    (r"\.weight_g$", ".parametrizations.weight.original0"),
    (r"\.weight_v$", ".parametrizations.weight.original1"),
    (r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook."),
)

#: EncodecConfig overrides of the two released models (24 kHz is transformers' default config).
PRESETS: dict[str, dict] = {
    "encodec_24khz": {},
    "encodec_48khz": {"target_bandwidths": [3.0, 6.0, 12.0, 24.0], "sampling_rate": 48_000, "audio_channels": 2,
                      "use_causal_conv": False, "norm_type": "time_group_norm", "normalize": True,
                      "chunk_length_s": 1.0, "overlap": 0.01},
}


def rename_original_key(key: str) -> str:
    """The transformers name of an original EnCodec state-dict key."""
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if not head:
        raise InputError(f"{path}: is empty; expected an original EnCodec .th checkpoint")
    if not zipfile.is_zipfile(path) and head != b"\x80\x02":  # torch's zip format, or its legacy pickle format
        raise InputError(f"{path}: not a weights-only torch checkpoint (not a complete zip archive: truncated "
                         "or another format); expected an original EnCodec .th checkpoint")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt archive, or it needs pickled code
        raise InputError(f"{path}: cannot read as a weights-only torch checkpoint ({_reason(err)})") from None
    for wrapper in ("best_state", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a state dict of tensors (an original EnCodec .th checkpoint)")
    return state


def _reason(err: Exception) -> str:
    """The informative line of torch.load's (often many-line) error, without its advice to drop weights_only."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = next((x for x in lines if x.startswith("WeightsUnpickler error")), lines[0] if lines else "")
    line = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", line)  # a C++ location, not a reason
    return line.split(". ")[0].rstrip(".") or type(err).__name__


def _config(preset: str, config_path: str | Path | None):
    from transformers import EncodecConfig

    if config_path is not None:
        try:
            return EncodecConfig.from_pretrained(str(config_path))
        except Exception as err:  # noqa: BLE001 - any parse failure is the same user error
            raise InputError(f"{config_path}: not an EnCodec config.json ({str(err).splitlines()[0]})") from None
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)} or give --config")
    return EncodecConfig(**PRESETS[preset])


def convert_encodec_checkpoint(checkpoint: str | Path, out_dir: str | Path, preset: str = "encodec_24khz",
                               config_path: str | Path | None = None) -> Path:
    """Read `checkpoint`, rename its keys, load them strictly into `EncodecModel` and save it to `out_dir`
    (config.json, model.safetensors, preprocessor_config.json), written to a temp folder then renamed."""
    from transformers import EncodecFeatureExtractor, EncodecModel

    from .encodec import _quiet_transformers

    _quiet_transformers()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir} exists and is not empty; choose a new --out folder")
    config = _config(preset, config_path)
    state = {rename_original_key(k): v for k, v in _read_checkpoint(checkpoint).items()}
    model = EncodecModel(config).eval()
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputError(f"{checkpoint}: does not match the {config_path or preset} architecture; missing "
                         f"{len(missing)} ({', '.join(missing[:3])}), unexpected {len(unexpected)} "
                         f"({', '.join(unexpected[:3])}); pass the right --preset or --config")
    bad = [k for k in expected if expected[k].shape != state[k].shape]
    if bad:
        raise InputError(f"{checkpoint}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, the architecture "
                         f"expects {tuple(expected[bad[0]].shape)}; pass the right --preset or --config")
    model.load_state_dict(state, strict=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(str(tmp))
        EncodecFeatureExtractor(feature_size=config.audio_channels, sampling_rate=config.sampling_rate,
                                chunk_length_s=config.chunk_length_s, overlap=config.overlap).save_pretrained(str(tmp))
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
