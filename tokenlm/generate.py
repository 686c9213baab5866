"""Load base + rows and generate token-space streams under the space's grammar; split and decode the output.

`load_generator(rows_dir)` loads the base model (an explicit `base`, else the space's `base_model`
asset, else the id recorded in the checkpoint), grows it, patches the rows and checks every hash.
`build_prompt_ids` encodes an optional condition item (any input `uti.Tokenizer` takes: an image or audio
file, an item of a registered codec) and the text prompt into the sequence builder's prompt layout.
`generate_ids` runs `model.generate` with the `TokenSpaceLogitsProcessor`, and `decode_stream` splits the
output into segments (`uti.Tokenizer.split`) and decodes each with its codec (text to a string, images to
codebook features per view, audio to a wav). Everything modality-specific (block lengths, how a block
closes within a budget, what a decoded block reports) is a codec hook (`uti.codecs.ModalityCodec`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from uti import specials as S
from uti.errors import MissingAssetError, UTIError
from uti.items import Segment
from uti.space import TokenSpace
from uti.tokenizer import Tokenizer

from .checkpoint import check_space, checkpoint_space, load_rows, read_manifest, recorded_base
from .constraints import TokenSpaceLogitsProcessor
from .model import load_base

__all__ = ["load_generator", "resolve_base", "build_prompt_ids", "generate_ids", "split_stream", "decode_stream",
           "targets", "text_vocab_size", "continued_stream", "default_max_new_tokens", "end_ids", "base_end_of_text",
           "DEFAULT_TEXT_TOKENS"]

DEFAULT_TEXT_TOKENS = 256  # a caption or a few sentences; generation also stops at the end of text
_END_OF_TEXT_TOKENS = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")  # tokenizer fallbacks, in this order


def resolve_base(space: TokenSpace, manifest: dict, base: str | None = None, rows_dir: str | Path = ".") -> str:
    """Which base model to load: `base`; else the space's `base_model` asset when it is on this machine;
    else the id or folder the checkpoint in `rows_dir` recorded; else the space's asset string (a hub id)."""
    try:
        asset = space.asset("base_model") if "base_model" in space.assets else None
    except MissingAssetError:  # a local path not on this machine (e.g. a checkpoint's copy of the space)
        asset = None
    for ref in (base, asset if isinstance(asset, Path) else None, recorded_base(rows_dir, manifest), asset):
        if ref:
            return str(ref)
    raise MissingAssetError("no base model known: the space names no base_model asset and the checkpoint records "
                            "none; pass --base NAME_OR_PATH")


def load_generator(rows_dir: str | Path, base: str | None = None,
                   space: TokenSpace | None = None) -> tuple[nn.Module, TokenSpace, dict]:
    """(grown model with rows patched, its space, the checkpoint manifest), every hash checked."""
    rows_dir = Path(rows_dir)
    manifest = read_manifest(rows_dir)
    check_space(rows_dir, manifest, space)  # the folder's own files first: refuse before loading any base
    space = space or checkpoint_space(rows_dir, manifest)
    ref = resolve_base(space, manifest, base, rows_dir)
    model = load_base(ref, dtype=manifest["dtype"])
    model = load_rows(model, rows_dir, space)
    return model.eval(), space, manifest


def targets(space: TokenSpace) -> list[str]:
    """What `generate` can produce in `space`: the modalities its codecs hold, in layout order."""
    return Tokenizer(space).modalities


def build_prompt_ids(space: TokenSpace, text: str = "", condition: Any = None, target: str = "text") -> list[int]:
    """Prompt IDs: `[condition block] <|gen_X|> <|X_start|> [text]` (see `uti.sequence`).

    `condition` is any item the space's tokenizer encodes (a `pathlib.Path` to an image or audio file, a PIL
    image, a `uti.Audio`, an item of a registered codec): it makes task `<short>2t`, the target must be text
    and `text` primes the answer. Without one, a non-text target X makes task `t2<short>` with `text` as the
    condition block.
    """
    from uti.sequence import build_prompt

    tok = Tokenizer(space)
    goal = tok.codec(target)  # refuses a modality the space does not hold, naming the ones it does
    text_ids = tok.encode(text) if text else []
    if condition is not None:
        if goal.modality != "text":
            raise UTIError(f"a condition item generates text; got target {target!r} (drop the condition, or use "
                           "--target text)")
        cond = tok.codec_for(condition)
        return build_prompt(space, f"{cond.short}2t", cond.encode(condition)) + text_ids
    if goal.modality == "text":
        return build_prompt(space, "text") + text_ids
    if not text_ids:
        raise UTIError(f"target {target} needs a text prompt (--prompt)")
    return build_prompt(space, f"t2{goal.short}", text_ids)


def text_vocab_size(space: TokenSpace) -> int | None:
    """The tokenizer's size (IDs above it in the text range have no token), or None without a tokenizer."""
    try:
        return Tokenizer(space).codec("text").codec.codebook_size
    except UTIError:
        return None


def default_max_new_tokens(space: TokenSpace, target: str, prompt_len: int = 0,
                           max_positions: int | None = None) -> int:
    """New IDs that finish one block of `target` after a prompt that ends on the block's opener.

    The target's codec says how long one block is (`default_new_tokens`): image: every view of the layout,
    each a view marker and P codes, then `<|image_end|>` (tiny: 9 x (1 + 16) + 1 = 154, 155 with the opener);
    audio: 5 s of frames, K levels each (plus K - 1 steps for the delay order), then `<|audio_end|>`. A codec
    without a fixed block (text) gets `DEFAULT_TEXT_TOKENS`. Capped so prompt and output fit the model's
    `max_positions`.
    """
    n = Tokenizer(space).codec(target).default_new_tokens()
    n = DEFAULT_TEXT_TOKENS if n is None else n
    if max_positions is not None:
        n = min(n, max(1, int(max_positions) - prompt_len))
    return n


def base_end_of_text(model: nn.Module, space: TokenSpace) -> list[int]:
    """The base model's end-of-text IDs: its generation config's or config's `eos_token_id`, else (a config
    that names none, like the tiny LM's) the tokenizer's own end-of-text token (`<|endoftext|>`, ...)."""
    for cfg in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(cfg, "eos_token_id", None)
        if eos is not None:
            return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
    try:
        tok = Tokenizer(space).codec("text").codec.tokenizer
    except UTIError:
        return []
    for name in _END_OF_TEXT_TOKENS:
        i = tok.token_to_id(name)
        if i is not None and i in space.ranges["text"]:
            return [int(i)]
    return []


def end_ids(model: nn.Module, space: TokenSpace, target: str) -> list[int]:
    """IDs that end generation of `target`: its block's end marker, and for text (the base model's own
    vocabulary) the base model's end of text."""
    eos = [space.special_id(Tokenizer(space).codec(target).markers()[1])]
    return eos + (base_end_of_text(model, space) if target == "text" else [])


class _CloseBlock:
    """A logits processor that makes generation take `token` at new-token index `close_at`.

    A codec's grammar may let a block end at many points but never make it end (audio: after any whole
    frame), so a budget would cut the block off mid-way; the codec's `budget_close` names where and how to
    close it instead. At that index this keeps only the closing token; a token the grammar forbids there
    is never forced.
    """

    def __init__(self, prompt_len: int, close_at: int, token: int) -> None:
        self.prompt_len, self.close_at, self.token = prompt_len, close_at, token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] - self.prompt_len != self.close_at:
            return scores
        keep = scores[:, self.token].clone()  # (B,)
        legal = torch.isfinite(keep)
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.token] = keep
        return torch.where(legal[:, None], forced, scores)


def _block_closer(space: TokenSpace, target: str, prompt: Sequence[int], max_new_tokens: int) -> _CloseBlock | None:
    """The `_CloseBlock` of the target's codec when the prompt ends on its start marker, or None."""
    codec = Tokenizer(space).codec(target)
    if not prompt or int(prompt[-1]) != space.special_id(codec.markers()[0]):
        return None
    close = codec.budget_close(max_new_tokens)
    return None if close is None else _CloseBlock(len(prompt), *close)


@torch.no_grad()
def generate_ids(model: nn.Module, space: TokenSpace, prompt: Sequence[int], max_new_tokens: int | None = None,
                 target: str = "text", do_sample: bool = True, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0) -> list[int]:
    """New IDs after `prompt`, every one legal under the space's grammar; stops at the target's end marker
    (text: also at the base model's end of text). `max_new_tokens` defaults to one whole block of `target`
    (`default_max_new_tokens`). The prompt goes to the model's device."""
    from transformers import LogitsProcessorList

    torch.manual_seed(seed)
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(space, target, len(prompt),
                                                getattr(model.config, "max_position_embeddings", None))
    eos = end_ids(model, space, target)
    processors = [TokenSpaceLogitsProcessor(space, text_vocab_size(space))]
    closer = _block_closer(space, target, prompt, max_new_tokens)
    processors += [closer] if closer is not None else []
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=do_sample, temperature=temperature if do_sample else None,
                         top_k=top_k if do_sample else None, top_p=None,
                         logits_processor=LogitsProcessorList(processors),
                         eos_token_id=eos, pad_token_id=space.special_id(S.PAD))
    return out[0, ids.shape[1]:].tolist()


def continued_stream(space: TokenSpace, prompt: Sequence[int], new: Sequence[int]) -> list[int]:
    """`new` with the block opener the prompt ended on (the start marker of a codec with a block grammar,
    e.g. `<|image_start|>`), for decoding."""
    tok = Tokenizer(space)
    opens = {i for i, m in tok.block_starts.items() if tok.codec(m).block_grammar() is not None}
    return ([int(prompt[-1])] if prompt and int(prompt[-1]) in opens else []) + [int(i) for i in new]


def split_stream(space: TokenSpace, ids: Sequence[int]) -> list[Segment]:
    """Segments of a stream (`Tokenizer.split(partial=True)`: runs of text IDs and codec blocks, markers
    included, `complete` when closed), without the lone specials between them (gen markers, `<|text_end|>`)."""
    return [seg for seg in Tokenizer(space).split(ids, partial=True) if seg.modality != "special"]


def decode_stream(space: TokenSpace, ids: Sequence[int], out_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Decode each segment with the space's codecs into a JSON-ready summary (`ModalityCodec.summary`; with
    `out_dir`, codecs that write files put segment k at `out_dir/<modality>_k.<suffix>`). A codec that is
    not available, or a block cut off by the budget, is reported, not fatal."""
    tok = Tokenizer(space)
    results = []
    for k, seg in enumerate(split_stream(space, ids)):
        res: dict[str, Any] = {"modality": seg.modality, "num_ids": len(seg.ids), "complete": seg.complete}
        if not seg.complete:
            res["decode_error"] = "block was cut off by --max-new-tokens"
        else:
            try:
                out = Path(out_dir) / f"{seg.modality}_{k}" if out_dir is not None else None
                res.update(tok.codec(seg.modality).summary(tok.decode_segment(seg), out))
            except UTIError as err:
                res["decode_error"] = str(err)
        results.append(res)
    return results
