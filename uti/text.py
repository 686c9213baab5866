"""Text codec: the base LM's tokenizer, lossless, pinned, and closed to special-token injection.

`TextCodec.decode(TextCodec.encode(s)) == s` for every Unicode string. Two things break that in stock
tokenizers and are switched off here: Unicode normalizers (Qwen's tokenizer applies NFC) and
transformers' `clean_up_tokenization_spaces`. We drive the `tokenizers` backend directly, without
normalizer, so decomposed characters round-trip byte for byte (a model trained on NFC text then sees
byte-level tokens for decomposed characters, which is rare and harmless). Pass `normalize=True` to keep
the tokenizer's normalizer when matching training-time tokenization matters more than losslessness.

Special tokens: a literal `<|endoftext|>` (or any special added token's string) in user text is encoded
as the plain text it is, like tiktoken's `encode(text, disallowed_special=())`, so a caption cannot inject
control IDs. `encode(text, allow_special=True)` (or a set of token strings) maps them to their IDs.
The token space's own specials (`<|image_start|>`, ...) lie above the base vocabulary and never come out
of text encoding at all.

The pin (`tokenizer_hash`) covers everything that decides text <-> IDs: model (type, vocabulary, merges,
options), normalizer, pre-tokenizer, post-processor, decoder and added tokens with their flags. It hashes
a canonical description of `tokenizer.to_str()`, not the file's bytes, so versions of `tokenizers` that
serialise the same tokenizer differently agree (see `canonical_tokenizer`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Collection, Iterator, Sequence

from tokenizers import Tokenizer

from .errors import InputError, MissingAssetError, TokenRangeError
from .hashing import hash_json

__all__ = ["TextCodec", "load_tokenizer", "tokenizer_hash", "canonical_tokenizer", "MAX_TOKENIZER_BYTES"]

MAX_TOKENIZER_BYTES = 128 * 1024**2  # real tokenizer.json files are <= ~35 MB; a bigger one is refused unread

# Per-call settings of a tokenizer.json, not part of what text maps to; the codec switches both off.
_RUNTIME_KEYS = ("version", "truncation", "padding")

# Fields that later `tokenizers` versions added, with the behaviour a serialisation without them has.
# Filled in when absent, so an older version's `to_str()` describes the same tokenizer as a newer one's.
_FIELD_DEFAULTS: dict[str, dict[str, Any]] = {
    "BPE": {"dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False},
    "Unigram": {"byte_fallback": False},
    "ByteLevel": {"add_prefix_space": True, "trim_offsets": True, "use_regex": True},  # pre-tokenizer/decoder/processor
    "Metaspace": {"split": True},
}


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """A `tokenizers.Tokenizer` from a tokenizer.json file, a local folder, or a hub id.

    A hub id's own tokenizer.json is preferred (from the Hugging Face cache or hub); transformers is the
    fallback for repositories without one. Local files larger than `MAX_TOKENIZER_BYTES` or not a valid
    tokenizer.json are refused with one line.
    """
    path = Path(name_or_path)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    if path.is_file():
        return _read_tokenizer_file(path)
    try:
        from huggingface_hub import hf_hub_download

        return _read_tokenizer_file(Path(hf_hub_download(str(name_or_path), "tokenizer.json")))
    except InputError:
        raise
    except Exception:  # not a hub id, offline, or a repository without tokenizer.json: try transformers
        pass
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(name_or_path)).backend_tokenizer
    except Exception as err:  # offline, unknown id, or a slow-only tokenizer
        raise MissingAssetError(f"cannot load tokenizer {name_or_path!r}: {str(err).splitlines()[0] if str(err) else err}; "
                                "give a local tokenizer.json or folder, or download the model first") from None


def _read_tokenizer_file(path: Path) -> Tokenizer:
    size = path.stat().st_size
    if size > MAX_TOKENIZER_BYTES:
        raise InputError(f"{path}: tokenizer file has {size} bytes, more than the {MAX_TOKENIZER_BYTES} accepted; "
                         "give the model's real tokenizer.json")
    with _tokenizer_errors(f"{path}: not a valid tokenizer.json", "restore the model's tokenizer.json"), _held_stderr():
        return Tokenizer.from_file(str(path))


@contextmanager
def _held_stderr() -> Iterator[None]:
    """Hold back what is written to file descriptor 2 while a tokenizer is built, and pass it on afterwards
    unless the build panicked: a Rust panic prints its message (and, with RUST_BACKTRACE, a backtrace)
    there before pyo3 turns it into an exception, which would break the one-line error contract."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (embedded interpreter): nothing to hold back
        yield
        return
    panicked = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException as err:
            panicked = type(err).__name__ == "PanicException"
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            if not panicked and (data := held.read()):
                os.write(2, data)


@contextmanager
def _tokenizer_errors(what: str, hint: str) -> Iterator[None]:
    """Errors of the `tokenizers` backend as one-line InputErrors: a bare Exception for bad JSON or structure,
    and pyo3's PanicException (a BaseException) where a hostile option combination panics in Rust."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as err:
        if not isinstance(err, Exception) and type(err).__name__ != "PanicException":
            raise
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{what} ({first[:200]}); {hint}") from None


def canonical_tokenizer(data: dict) -> dict:
    """What decides text <-> IDs in a parsed tokenizer.json, independent of how it was serialised.

    Normalised: key order (hashing sorts keys), BPE merges as `"a b"` strings (tokenizers < 0.20) or
    `["a", "b"]` pairs, fields added by later versions (filled with the behaviour their absence means,
    `_FIELD_DEFAULTS`), Metaspace's old `add_prefix_space` (now `prepend_scheme`), and added-token order.
    Dropped: `version`, `truncation`, `padding` (per-call settings that the codec switches off).
    """
    out = {k: v for k, v in data.items() if k not in _RUNTIME_KEYS}
    if isinstance(out.get("model"), dict):
        out["model"] = _canonical_model(out["model"])
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        out[key] = _canonical_component(out.get(key))
    if isinstance(out.get("added_tokens"), list):
        out["added_tokens"] = sorted(out["added_tokens"], key=lambda t: t.get("id", -1) if isinstance(t, dict) else -1)
    return out


def _canonical_model(model: dict) -> dict:
    out = dict(model)
    if isinstance(out.get("merges"), list):
        out["merges"] = [m.split(" ", 1) if isinstance(m, str) else m for m in out["merges"]]
    return _with_defaults(out)


def _canonical_component(node: Any) -> Any:
    """A normalizer/pre-tokenizer/processor/decoder (possibly a Sequence of them), recursively."""
    if isinstance(node, list):
        return [_canonical_component(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _canonical_component(v) for k, v in node.items()}
    if out.get("type") == "Metaspace":
        out.pop("str_rep", None)  # tokenizers < 0.11 stored the replacement twice
        if out.pop("add_prefix_space", True) is False:  # < 0.19: no prefix whatever the scheme says
            out["prepend_scheme"] = "never"
        out.setdefault("prepend_scheme", "always")
    return _with_defaults(out)


def _with_defaults(node: dict) -> dict:
    kind = node.get("type")
    for key, value in _FIELD_DEFAULTS.get(kind if isinstance(kind, str) else "", {}).items():
        node.setdefault(key, value)
    return node


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """Content hash of everything that decides text <-> IDs (see `canonical_tokenizer`)."""
    return hash_json(canonical_tokenizer(json.loads(tokenizer.to_str())))


class TextCodec:
    """Lossless text <-> token IDs in [0, vocab) through a `tokenizers.Tokenizer`.

    `tokenizer` is this codec's working copy (no truncation or padding, normalizer removed unless
    `normalize`, special-token strings encoded as text); the one given is left unchanged.
    """

    modality = "text"
    num_codebooks = 1

    def __init__(self, tokenizer: Tokenizer, name: str = "tokenizer", normalize: bool = False) -> None:
        self._json = tokenizer.to_str()
        self.tokenizer_hash = hash_json(canonical_tokenizer(json.loads(self._json)))
        self.name = name
        self.normalize = normalize
        self.special_tokens = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        self.tokenizer = self._working_copy(frozenset())
        self._allowing: dict[frozenset[str], Tokenizer] = {frozenset(): self.tokenizer}
        self.codebook_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, normalize: bool = False) -> "TextCodec":
        return cls(load_tokenizer(name_or_path), name=str(name_or_path), normalize=normalize)

    @classmethod
    def from_space(cls, space: Any, normalize: bool = False) -> "TextCodec":
        """The space's tokenizer; refuses one whose `tokenizer_hash` differs from the space's pin."""
        space.require_assets("tokenizer")
        codec = cls(load_tokenizer(space.asset("tokenizer")), name=space.abi["text"]["tokenizer"], normalize=normalize)
        space.check_asset("tokenizer", codec.tokenizer_hash)  # the one pin check (uti.assets.check_pin)
        if codec.codebook_size > space.abi["text"]["base_vocab_size"]:
            raise TokenRangeError(f"tokenizer has {codec.codebook_size} tokens, more than the space's base vocab "
                                  f"{space.abi['text']['base_vocab_size']}")
        return codec

    @property
    def vocab_hash(self) -> str:
        """Old name of `tokenizer_hash` (which now covers the whole tokenizer, not only the vocabulary)."""
        return self.tokenizer_hash

    def _working_copy(self, allowed: frozenset[str]) -> Tokenizer:
        """A tokenizer that encodes the specials in `allowed` as control IDs and every other special as text.

        Allowed specials are marked non-special in the copy (IDs unchanged), so the library's
        `encode_special_tokens` switch, which skips special added tokens, still matches them.
        """
        data = json.loads(self._json)
        for added in data.get("added_tokens") or []:
            if added.get("content") in allowed:
                added["special"] = False
        with _tokenizer_errors("tokenizer cannot be rebuilt from its own JSON", "use the model's real tokenizer.json"), \
                _held_stderr():
            tok = Tokenizer.from_str(json.dumps(data)) if allowed else Tokenizer.from_str(self._json)
        if not self.normalize:
            tok.normalizer = None
        tok.no_truncation()
        tok.no_padding()
        tok.encode_special_tokens = True
        return tok

    def _tokenizer_allowing(self, allow_special: bool | Collection[str]) -> tuple[Tokenizer, frozenset[str]]:
        if allow_special is True:
            allowed = frozenset(self.special_tokens)
        elif allow_special is False:
            allowed = frozenset()
        elif isinstance(allow_special, (str, bytes)) or not isinstance(allow_special, Collection) \
                or not all(isinstance(s, str) for s in allow_special):
            raise InputError("allow_special must be True, False or a collection of special-token strings")
        else:
            allowed = frozenset(allow_special)
            unknown = sorted(allowed - set(self.special_tokens))
            if unknown:
                raise InputError(f"{unknown[0]!r} is not a special token of this tokenizer; its specials are "
                                 f"{', '.join(sorted(self.special_tokens)) or 'none'}")
        if allowed not in self._allowing:
            self._allowing[allowed] = self._working_copy(allowed)
        return self._allowing[allowed], allowed

    def encode(self, text: str, allow_special: bool | Collection[str] = False) -> list[int]:
        """Token IDs of `text` (no BOS/EOS or other post-processing added).

        Special-token strings in `text` are encoded as plain text unless `allow_special` is True (all of
        them) or a collection holding that string; then they become the token's control ID.
        """
        if not isinstance(text, str):
            raise InputError(f"text must be a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("text contains lone surrogates and is not valid Unicode; fix its decoding") from None
        tokenizer, allowed = self._tokenizer_allowing(allow_special)
        with _tokenizer_errors("the tokenizer failed on this text", "check the space's tokenizer.json"):
            ids = tokenizer.encode(text, add_special_tokens=False).ids
        forbidden = {i for s, i in self.special_tokens.items() if s not in allowed}
        if forbidden and not forbidden.isdisjoint(ids):
            token = next(s for s, i in self.special_tokens.items() if i in forbidden and i in ids)
            raise InputError(f"this tokenizer's model turns text into the special token {token!r} even as plain text; "
                             "remove that string from the text or pass allow_special")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`; IDs without a token (e.g. unused rows of a padded base vocab) raise TokenRangeError."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.codebook_size]
        if bad:
            raise TokenRangeError(f"text ID {bad[0]} has no token; this tokenizer has IDs [0, {self.codebook_size})")
        with _tokenizer_errors("the tokenizer failed to decode these IDs", "check the space's tokenizer.json"):
            return self.tokenizer.decode(ids, skip_special_tokens=False)

    def abi(self) -> dict:
        return {"tokenizer": self.name, "tokenizer_hash": self.tokenizer_hash}
