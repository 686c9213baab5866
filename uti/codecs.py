"""The modality codec registry: one class per modality owns everything the rest of the toolkit needs of it.

A modality codec (subclass of `ModalityCodec`, registered with `@register_codec("name")`) owns

* its ABI section (`build_section` for `uti space build`, `validate_section`) and its asset keys;
* its ID ranges (`range_sizes`): the space lays them out as ``text, special, <codecs in (rank, name) order>,
  padding``, so a codec's `rank` and the order of its sizes are part of the ABI (changing them moves IDs);
* its specials and stream layout: ``<|m_start|> content <|m_end|>`` plus the gen marker ``<|gen_m|>``,
  and the specials that may sit inside its block (`content_specials`);
* what inputs it claims (`accepts`) and which files (`file_suffixes`), encoding to global IDs, strict
  decoding of one block, and writing a decoded block to a file (`decode_to_file`, what `uti decode` runs);
* the schema of the `meta` its encoded documents carry (`meta_type`, a frozen dataclass checked by
  `uti.document`);
* the generation grammar of its block (`block_grammar`: a small state machine walked by
  `tokenlm.constraints.Grammar`), and what `tokenlm` asks of a block besides: its default length
  (`default_new_tokens`), how a budget closes it (`budget_close`), a report of a decoded block
  (`summary`), and vectors describing its codes for initialising LM rows (`vector_ranges`, `code_vectors`).

Class-level methods need only the ABI section (no assets), so the space, the sequence builder and the
grammar use them without loading any model; an instance is bound to a `TokenSpace` and to the run options
`device`, `dtype` and `strict`, and loads its assets on first use (or at `load()`). The built-in codecs
(text, image, audio) live in `uti.modalities` and are registered on first use of the registry, so
`import uti` stays light.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Protocol, TypeVar

from .errors import ConfigError, InputError, SpaceError

__all__ = ["ModalityCodec", "BlockGrammar", "NoMeta", "register_codec", "unregister_codec", "codec_class",
           "codec_classes", "present_codecs", "code_tokens", "Ranges"]

Ranges = list[tuple[int, int]]  # half-open [start, stop) ID ranges
_BUILTINS = ("uti.modalities.text", "uti.modalities.image", "uti.modalities.audio")
_REGISTRY: dict[str, type["ModalityCodec"]] = {}
_loaded = False
C = TypeVar("C", bound=type)


class BlockGrammar(Protocol):
    """The generation rules inside one block (after its start marker). States are immutable values."""

    def start(self) -> Any: ...

    def allowed(self, state: Any, prompt: bool = False) -> Ranges:
        """Legal next IDs in `state`, the end marker included where the block may end (`prompt`: walking a prompt)."""

    def advance(self, state: Any, tok: int) -> Any:
        """The state after the legal non-end token `tok`."""

    def export(self) -> dict[str, Any]:
        """These rules as JSON-ready data (for `tokenlm export-rules`)."""


@dataclasses.dataclass(frozen=True)
class NoMeta:
    """The `meta_type` of a codec whose documents carry no metadata (`meta` must be `{}`)."""


class ModalityCodec:
    """Base class of a modality codec (see the module doc). Subclasses override what their modality needs."""

    modality: ClassVar[str] = ""
    rank: ClassVar[int] = 100
    short: ClassVar[str] = ""  # task-name abbreviation ("i" in "i2t"); the modality name always works too
    asset_keys: ClassVar[tuple[str, ...]] = ()
    before_specials: ClassVar[bool] = False  # text only: its range precedes the special range
    meta_type: ClassVar[type] = NoMeta  # frozen dataclass of its documents' `meta` (fields typed, see uti.document)

    # --- ABI (no assets needed) ----------------------------------------------------------------------
    @classmethod
    def build_section(cls, section_cfg: dict[str, Any], assets: dict[str, Path | str]) -> dict[str, Any]:
        """The space's `abi[modality]` from the config's section and the resolved assets."""
        raise ConfigError(f"the {cls.modality} codec cannot build an ABI section")

    @classmethod
    def validate_section(cls, section: Any) -> list[str]:
        """Problems of `abi[modality]` (empty when valid)."""
        return []

    @classmethod
    def range_sizes(cls, section: dict[str, Any]) -> list[tuple[str, int]]:
        """(range name, size) of this codec's ID ranges, in layout order. Names are the modality name or
        "modality.suffix" (e.g. "audio.0"): the sequence builder finds a modality's ranges by that rule."""
        return []

    @classmethod
    def code_token_name(cls, range_name: str, code: int) -> str:
        """The token string of local `code` of range `range_name` (for exported tokenizers)."""
        return f"<|{range_name}_{code}|>"

    @classmethod
    def markers(cls) -> tuple[str, str]:
        return f"<|{cls.modality}_start|>", f"<|{cls.modality}_end|>"

    @classmethod
    def gen_marker(cls) -> str:
        return f"<|gen_{cls.modality}|>"

    @classmethod
    def specials(cls, section: dict[str, Any]) -> list[str]:
        """Every special this codec needs in a space holding `section` (markers first)."""
        return [*cls.markers(), cls.gen_marker()]

    @classmethod
    def content_specials(cls, names: Iterable[str]) -> set[str]:
        """Those of the space's special `names` that may sit inside this codec's block."""
        return set()

    @classmethod
    def file_suffixes(cls) -> tuple[str, ...]:
        """Lower-case file suffixes this codec reads (batch encoding lists a folder by them)."""
        return ()

    @classmethod
    def accepts(cls, item: Any) -> bool:
        """Whether `encode` takes `item` (the tokenizer asks codecs in (rank, name) order)."""
        return False

    # --- bound to a space ----------------------------------------------------------------------------
    def __init__(self, space: Any, *, device: Any = "cpu", dtype: Any = None, strict: bool = False,
                 batch_size: int | None = None) -> None:
        """`device`/`dtype` place the codec's model (dtype None: its default); `strict` refuses inputs the
        decoder had to repair (`uti encode --strict`); `batch_size`: inputs per model forward for codecs that
        batch (the image tower's views; None: the codec's default)."""
        self.space = space
        self.section = space.abi.get(self.modality)
        self.device, self.dtype, self.strict, self.batch_size = device, dtype, strict, batch_size

    def load(self) -> None:
        """Load the assets now (they load on first use otherwise). Batch encoding calls this in the main thread
        before its worker threads start: building a model (transformers' lazy imports) is not thread-safe."""

    def range_keys(self) -> list[str]:
        return [name for name, _ in self.range_sizes(self.section)]

    def encode(self, item: Any) -> list[int]:
        """`item` -> global IDs of one block, markers included."""
        raise NotImplementedError

    def encode_with_meta(self, item: Any) -> tuple[list[int], dict[str, Any]]:
        """`encode` plus plain JSON-ready metadata (what `uti encode` documents record)."""
        return self.encode(item), {}

    def encode_batch(self, items: list[Any]) -> list[list[int]]:
        """Several items at once; codecs that can batch (one tower forward) override this."""
        return [self.encode(x) for x in items]

    def encode_stream(self, items: Iterable[Any], workers: int = 1) -> Iterable[tuple[Any, Exception | None]]:
        """`((ids, meta), None)` or `(None, error)` per item, in order (batch encoding; one bad item fails
        alone). Default: `encode_with_meta` of each in `workers` threads; codecs that batch model work across
        items override this."""
        from .batch import ordered_map

        return ordered_map(self.encode_with_meta, items, workers)

    def decode_block(self, ids: list[int]) -> Any:
        """Strictly decode one block (markers included) to this modality's value."""
        raise NotImplementedError

    def decode_to_file(self, ids: list[int], out: str | None, meta: Any, where: str = "document") -> dict[str, Any]:
        """Decode the IDs of one document (`meta`: its `meta_type` instance, checked against what the IDs give)
        and, when `out` is given, write the decoded value there; a JSON-ready summary (what `uti decode`
        prints). This default decodes strictly and writes nothing."""
        if out:
            raise InputError(f"{where}: the {self.modality} codec cannot write decoded output to a file; drop --out")
        self.decode_block(ids)
        return {"modality": self.modality, "num_ids": len(ids)}

    def block_grammar(self) -> BlockGrammar | None:
        """The block's generation rules. None (text) means no block state: the codec's IDs are legal outside
        any block (`outside`), and its start marker does not open a block in the grammar."""
        return None

    def outside(self, text_limit: int | None = None) -> Ranges:
        """IDs this codec makes legal outside any block: its start and gen markers."""
        sid = self.space.special_id
        return [(sid(n), sid(n) + 1) for n in (self.markers()[0], self.gen_marker())]

    # --- token LM hooks (tokenlm generate, row initialisation) -------------------------------------
    def default_new_tokens(self) -> int | None:
        """New IDs that finish one generated block after its start marker (end marker included), or None
        when the codec has no fixed block (text: `tokenlm.generate` uses its own text budget)."""
        return None

    def budget_close(self, max_new_tokens: int) -> tuple[int, int] | None:
        """(new-ID index, token ID) that generation must take there so a block opened by the prompt closes
        within `max_new_tokens`, or None when the grammar closes the block by itself (or it cannot fit)."""
        return None

    def summary(self, segment: Any, out: Path | None = None) -> dict[str, Any]:
        """JSON-ready facts of a decoded `segment` (a `uti.Segment`) for reports. With `out` (a path without
        suffix) a codec whose value is a file format may also write it there and report its path."""
        return {}

    @classmethod
    def vector_ranges(cls, section: dict[str, Any]) -> list[str]:
        """Names of the ranges whose codes have feature vectors (`code_vectors`), from the ABI alone."""
        return []

    def code_vectors(self) -> dict[str, Any]:
        """{range name: (size, Dc) float tensor} of vectors describing each code (e.g. an image codebook),
        pin-checked through `space.check_asset`; used to initialise a grown LM's rows (`init="codebook"`)."""
        return {}


def register_codec(name: str, *, rank: int = 100, short: str = "") -> Callable[[C], C]:
    """Class decorator: register a `ModalityCodec` subclass under modality `name` (see module doc for `rank`)."""
    if not name.isidentifier() or "2" in name or (short and ("2" in short or not short.isidentifier())):
        raise ConfigError(f"codec name {name!r}/short {short!r} must be identifiers without the digit 2 (task names are X2Y)")

    def deco(cls: C) -> C:
        if not (isinstance(cls, type) and issubclass(cls, ModalityCodec)):
            raise ConfigError(f"register_codec({name!r}) needs a ModalityCodec subclass, got {cls!r}")
        if not (isinstance(cls.meta_type, type) and dataclasses.is_dataclass(cls.meta_type)):
            raise ConfigError(f"register_codec({name!r}): meta_type must be a dataclass, got {cls.meta_type!r}")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(f"a codec {old.__qualname__} is already registered for {name!r}; unregister it first")
        cls.modality, cls.rank, cls.short = name, rank, short or name
        _REGISTRY[name] = cls
        return cls

    return deco


def unregister_codec(name: str) -> None:
    """Remove the codec registered for `name` (tests register toy codecs and clean up)."""
    _REGISTRY.pop(name, None)


def _ensure_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTINS:
            importlib.import_module(module)


def codec_classes() -> list[type[ModalityCodec]]:
    """All registered codecs in layout order: (rank, name)."""
    _ensure_builtins()
    return sorted(_REGISTRY.values(), key=lambda c: (c.rank, c.modality))


def codec_class(name: str) -> type[ModalityCodec]:
    """The codec registered for modality (or task abbreviation) `name`."""
    for cls in codec_classes():
        if name in (cls.modality, cls.short):
            return cls
    known = ", ".join(c.modality for c in codec_classes())
    raise SpaceError(f"no codec is registered for modality {name!r}; registered: {known} "
                     "(import the module that registers it)")


def present_codecs(abi: dict[str, Any]) -> list[type[ModalityCodec]]:
    """The registered codecs whose section `abi` holds, in layout order."""
    return [c for c in codec_classes() if abi.get(c.modality) is not None]


def code_tokens(space: Any) -> list[tuple[int, str]]:
    """(global ID, token string) of every code ID of the space's non-text codecs, in ID order."""
    out = []
    for cls in present_codecs(space.abi):
        if not cls.before_specials:
            for name, size in cls.range_sizes(space.abi[cls.modality]):
                out += [(space.ranges[name].start + c, cls.code_token_name(name, c)) for c in range(size)]
    return sorted(out)
