"""Load base + rows and generate token-space streams under the space's grammar; split and decode the output.

`load_generator(rows_dir)` loads the base model (an explicit `base`, else the space's `base_model`
asset, else the id recorded in the checkpoint), grows it, patches the rows and checks every hash.
`build_prompt_ids` encodes an optional image/audio condition and the text prompt with the space's
codecs into the sequence builder's prompt layout. `generate_ids` runs `model.generate` with the
`TokenSpaceLogitsProcessor`, and `decode_stream` splits the output into text / image / audio segments
and decodes each with `uti` (text to a string, images to codebook features per view, audio to a wav).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from uti import specials as S
from uti.errors import MissingAssetError, UTIError
from uti.space import TokenSpace

from .checkpoint import check_space, checkpoint_space, load_rows, read_manifest
from .constraints import TokenSpaceLogitsProcessor
from .model import load_base

__all__ = ["load_generator", "resolve_base", "build_prompt_ids", "generate_ids", "split_stream", "decode_stream",
           "TARGETS", "text_vocab_size", "continued_stream", "default_max_new_tokens", "end_ids", "base_end_of_text",
           "DEFAULT_TEXT_TOKENS", "DEFAULT_AUDIO_SECONDS"]

TARGETS = ("text", "image", "audio")
_END = {"text": S.TEXT_END, "image": S.IMAGE_END, "audio": S.AUDIO_END}
DEFAULT_TEXT_TOKENS = 256  # a caption or a few sentences; generation also stops at the end of text
DEFAULT_AUDIO_SECONDS = 5.0  # audio blocks may close after any whole frame; 5 s is the default budget
_END_OF_TEXT_TOKENS = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")  # tokenizer fallbacks, in this order


def resolve_base(space: TokenSpace, manifest: dict, base: str | None = None) -> str:
    """Which base model to load: `base`; else the space's `base_model` asset when it is on this machine;
    else the id or path the checkpoint recorded; else the space's asset string (a hub id)."""
    try:
        asset = space.asset("base_model") if "base_model" in space.assets else None
    except MissingAssetError:  # a local path not on this machine (e.g. a checkpoint's copy of the space)
        asset = None
    for ref in (base, asset if isinstance(asset, Path) else None, manifest.get("base_model"), asset):
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
    ref = resolve_base(space, manifest, base)
    model = load_base(ref, dtype=manifest["dtype"])
    model = load_rows(model, rows_dir, space)
    return model.eval(), space, manifest


def _encode_image(space: TokenSpace, path: str | Path) -> list[int]:
    from uti.image.codec import ImageCodec, to_ids

    return to_ids(ImageCodec.from_space(space).encode(path), space)


def _encode_audio(space: TokenSpace, path: str | Path) -> list[int]:
    from uti.audio.codec import AudioCodec

    codec = AudioCodec.from_space(space)
    return codec.to_ids(codec.encode_file(path))


def build_prompt_ids(space: TokenSpace, text: str = "", image: str | Path | None = None,
                     audio: str | Path | None = None, target: str = "text") -> list[int]:
    """Prompt IDs: `[condition block] <|gen_X|> <|X_start|> [text]` (see `uti.sequence`).

    With an image/audio condition the target must be text and `text` primes the answer; with a text-only
    prompt and target image/audio, `text` is the condition block.
    """
    from uti.sequence import build_prompt
    from uti.text import TextCodec

    if target not in TARGETS:
        raise UTIError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if target not in space.modalities:
        raise UTIError(f"token space {space.name!r} has no {target} section (it has {', '.join(space.modalities)})")
    if image is not None and audio is not None:
        raise UTIError("give at most one of --image and --audio")
    text_ids = TextCodec.from_space(space).encode(text) if text else []
    if image is not None or audio is not None:
        if target != "text":
            raise UTIError(f"an image/audio condition generates text; got target {target!r}")
        cond = _encode_image(space, image) if image is not None else _encode_audio(space, audio)
        return build_prompt(space, "i2t" if image is not None else "a2t", cond) + text_ids
    if target == "text":
        return build_prompt(space, "text") + text_ids
    if not text_ids:
        raise UTIError(f"target {target} needs a text prompt (--prompt)")
    return build_prompt(space, "t2i" if target == "image" else "t2a", text_ids)


def text_vocab_size(space: TokenSpace) -> int | None:
    """The tokenizer's size (IDs above it in the text range have no token), or None without a tokenizer."""
    from uti.text import TextCodec

    try:
        return TextCodec.from_space(space).codebook_size
    except UTIError:
        return None


def default_max_new_tokens(space: TokenSpace, target: str, prompt_len: int = 0,
                           max_positions: int | None = None) -> int:
    """New IDs that finish one block of `target` after a prompt that ends on the block's opener.

    image: every view of the layout, each a view marker and P codes, then `<|image_end|>` (tiny: 9 x (1 + 16)
    + 1 = 154, 155 with the opener); audio: `DEFAULT_AUDIO_SECONDS` of frames, K levels each (plus K - 1 steps
    for the delay order), then `<|audio_end|>`; text: `DEFAULT_TEXT_TOKENS`. Capped so prompt and output fit
    the model's `max_positions`.
    """
    from .constraints import codes_per_view

    if target == "image":
        layout = space.abi["image"]["layout"]
        views = int(layout["num_tiles"]) + int(bool(layout.get("global_view", True)))
        n = views * (1 + codes_per_view(space.abi["image"])) + 1
    elif target == "audio":
        audio = space.abi["audio"]
        k = int(audio["num_codebooks"])
        frames = round(DEFAULT_AUDIO_SECONDS * float(audio["frame_rate"]))
        n = (frames + (k - 1 if audio.get("order") == "delay" else 0)) * k + 1
    else:
        n = DEFAULT_TEXT_TOKENS
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
    from uti.text import TextCodec

    try:
        tok = TextCodec.from_space(space).tokenizer
    except UTIError:
        return []
    for name in _END_OF_TEXT_TOKENS:
        i = tok.token_to_id(name)
        if i is not None and i in space.ranges["text"]:
            return [int(i)]
    return []


def end_ids(model: nn.Module, space: TokenSpace, target: str) -> list[int]:
    """IDs that end generation of `target`: its block's end marker, and for text the base model's end of text."""
    eos = [space.special_id(_END[target])]
    return eos + (base_end_of_text(model, space) if target == "text" else [])


class _CloseAudioBlock:
    """A logits processor that closes the audio block after the whole frames that `max_new_tokens` allows.

    The grammar lets an audio block end after any whole frame but never makes it end, so a budget would cut
    the block off inside a frame. At new-token index `close_at` this keeps only the closing token:
    `<|audio_end|>` (frame_major) or the level-0 `<|pad|>` that ends the frames (delay; the grammar then
    forces the trailing fillers and the end marker). A token the grammar forbids there is never forced.
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


def _audio_closer(space: TokenSpace, prompt: Sequence[int], max_new_tokens: int) -> _CloseAudioBlock | None:
    """The `_CloseAudioBlock` for an audio target whose prompt ends on `<|audio_start|>`, or None."""
    if not prompt or int(prompt[-1]) != space.special_id(S.AUDIO_START):
        return None
    audio = space.abi["audio"]
    k = int(audio["num_codebooks"])
    delay = audio.get("order") == "delay"
    frames = (max_new_tokens - 1) // k - (k - 1 if delay else 0)
    if frames < 1:
        return None
    return _CloseAudioBlock(len(prompt), frames * k, space.special_id(S.PAD if delay else S.AUDIO_END))


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
    closer = _audio_closer(space, prompt, max_new_tokens) if target == "audio" else None
    processors += [closer] if closer is not None else []
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=do_sample, temperature=temperature if do_sample else None,
                         top_k=top_k if do_sample else None, top_p=None,
                         logits_processor=LogitsProcessorList(processors),
                         eos_token_id=eos, pad_token_id=space.special_id(S.PAD))
    return out[0, ids.shape[1]:].tolist()


def continued_stream(space: TokenSpace, prompt: Sequence[int], new: Sequence[int]) -> list[int]:
    """`new` with the block opener the prompt ended on (`<|image_start|>`/`<|audio_start|>`), for decoding."""
    opens = {space.special_id(S.IMAGE_START), space.special_id(S.AUDIO_START)}
    return ([int(prompt[-1])] if prompt and int(prompt[-1]) in opens else []) + [int(i) for i in new]


def split_stream(space: TokenSpace, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Segments of a stream: runs of text IDs, and image/audio blocks (markers included; `complete` if closed)."""
    starts = {space.special_id(S.IMAGE_START): "image", space.special_id(S.AUDIO_START): "audio"}
    ends = {"image": space.special_id(S.IMAGE_END), "audio": space.special_id(S.AUDIO_END)}
    text = space.ranges["text"]
    segs: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for i in ids:
        i = int(i)
        if cur is not None and cur["modality"] != "text":
            cur["ids"].append(i)
            if i == ends[cur["modality"]]:
                cur["complete"], cur = True, None
            continue
        if i in starts:
            cur = {"modality": starts[i], "ids": [i], "complete": False}
            segs.append(cur)
        elif i in text:
            if cur is None:
                cur = {"modality": "text", "ids": [], "complete": True}
                segs.append(cur)
            cur["ids"].append(i)
        else:
            cur = None  # other specials separate text runs
    return segs


def decode_stream(space: TokenSpace, ids: Sequence[int], out_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Decode each segment with the space's codecs; a codec that is not available is reported, not fatal."""
    results = []
    for k, seg in enumerate(split_stream(space, ids)):
        res = {"modality": seg["modality"], "num_ids": len(seg["ids"]), "complete": seg["complete"]}
        try:
            res.update(_decode_segment(space, seg, k, out_dir))
        except UTIError as err:
            res["decode_error"] = str(err)
        results.append(res)
    return results


def _decode_segment(space: TokenSpace, seg: dict, k: int, out_dir: str | Path | None) -> dict[str, Any]:
    if seg["modality"] == "text":
        from uti.text import TextCodec

        return {"text": TextCodec.from_space(space).decode(seg["ids"])}
    if not seg["complete"]:
        return {"decode_error": "block was cut off by --max-new-tokens"}
    if seg["modality"] == "image":
        from uti.image.codec import decode_codes, from_ids
        from uti.image.layout import Layout
        from uti.image.vq import Codebook

        enc = from_ids(seg["ids"], space)
        space.require_assets("codebook")
        sec = space.abi["image"]
        codebook = Codebook.load(space.asset("codebook"))
        space.check_asset("codebook", codebook.content_hash())  # the one pin check (uti.assets.check_pin)
        dec = decode_codes(enc.codes, codebook, Layout.from_abi(sec["layout"]), int(sec["grid"][0]))
        return {"views": int(enc.codes.shape[0]), "features_shape": list(dec["features"].shape)}
    from uti.audio.codec import AudioCodec

    codec = AudioCodec.from_space(space)
    enc = codec.from_ids(seg["ids"])
    res: dict[str, Any] = {"frames": int(enc.codes.shape[1])}
    if out_dir is not None:
        path = Path(out_dir) / f"audio_{k}.wav"
        res["samples"] = codec.decode_to_file(enc, path)
        res["path"] = str(path)
    return res
