"""Audio tokens: EnCodec or Mimi residual-VQ codes as level-ordered IDs of the token space (see `codec.py`)."""

from .codec import AudioCodec, AudioConfig, audio_abi_section
from .encodec import load_encodec
from .serialize import ORDERS, codes_to_ids, delay, ids_to_codes, undelay

__all__ = [
    "ORDERS",
    "AudioCodec",
    "AudioConfig",
    "audio_abi_section",
    "codes_to_ids",
    "delay",
    "ids_to_codes",
    "load_encodec",
    "undelay",
]
