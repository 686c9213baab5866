"""Text codec: the base LM's tokenizer, lossless.

`TextCodec.decode(TextCodec.encode(s)) == s` for every Unicode string. Two things break that in stock
tokenizers and are switched off here: Unicode normalizers (Qwen's tokenizer applies NFC) and
transformers' `clean_up_tokenization_spaces`. We drive the `tokenizers` backend directly, without
normalizer, so decomposed characters round-trip byte for byte (a model trained on NFC text then sees
byte-level tokens for decomposed characters, which is rare and harmless). Pass `normalize=True` to keep
the tokenizer's normalizer when matching training-time tokenization matters more than losslessness.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

from tokenizers import Tokenizer

from .errors import InputError, MissingAssetError, TokenRangeError
from .hashing import hash_json

__all__ = ["TextCodec", "load_tokenizer", "tokenizer_hash"]


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """A `tokenizers.Tokenizer` from a tokenizer.json file, a local folder, or a hub id (via transformers)."""
    path = Path(name_or_path)
    if path.is_file():
        return Tokenizer.from_file(str(path))
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(name_or_path)).backend_tokenizer
    except Exception as err:  # offline, unknown id, or a slow-only tokenizer
        raise MissingAssetError(f"cannot load tokenizer {name_or_path!r}: {str(err).splitlines()[0] if str(err) else err}; "
                                "give a local tokenizer.json or folder, or download the model first") from None


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """Content hash of what the IDs mean: the full token -> ID map, added tokens included.

    Hashing the vocabulary rather than the tokenizer.json bytes keeps the hash stable across `tokenizers`
    versions that serialise the same tokenizer differently.
    """
    return hash_json(sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1]))


class TextCodec:
    """Lossless text <-> token IDs in [0, vocab) through a `tokenizers.Tokenizer`."""

    modality = "text"
    num_codebooks = 1

    def __init__(self, tokenizer: Tokenizer, name: str = "tokenizer", normalize: bool = False) -> None:
        if not normalize and tokenizer.normalizer is not None:
            tokenizer = copy.deepcopy(tokenizer)
            tokenizer.normalizer = None
        self.tokenizer = tokenizer
        self.name = name
        self.codebook_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, normalize: bool = False) -> "TextCodec":
        return cls(load_tokenizer(name_or_path), name=str(name_or_path), normalize=normalize)

    @classmethod
    def from_space(cls, space: Any, normalize: bool = False) -> "TextCodec":
        """The space's tokenizer; refuses one whose vocabulary hash differs from the space's abi."""
        space.require_assets("tokenizer")
        codec = cls(load_tokenizer(space.asset("tokenizer")), name=space.abi["text"]["tokenizer"], normalize=normalize)
        space.check_asset("tokenizer", codec.vocab_hash)  # the one pin check (uti.assets.check_pin)
        if codec.codebook_size > space.abi["text"]["base_vocab_size"]:
            raise TokenRangeError(f"tokenizer has {codec.codebook_size} tokens, more than the space's base vocab "
                                  f"{space.abi['text']['base_vocab_size']}")
        return codec

    @property
    def vocab_hash(self) -> str:
        return tokenizer_hash(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        """Token IDs of `text` (no BOS/EOS or other post-processing added)."""
        if not isinstance(text, str):
            raise InputError(f"text must be a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("text contains lone surrogates and is not valid Unicode; fix its decoding") from None
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`; IDs without a token (e.g. unused rows of a padded base vocab) raise TokenRangeError."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.codebook_size]
        if bad:
            raise TokenRangeError(f"text ID {bad[0]} has no token; this tokenizer has IDs [0, {self.codebook_size})")
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def abi(self) -> dict:
        return {"tokenizer": self.name, "tokenizer_hash": self.vocab_hash}
