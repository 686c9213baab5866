"""Export base + rows as a plain Hugging Face model directory with the grown tokenizer.

The merged model has an (total, D) embedding (and head, unless tied) made of the untouched base rows,
the trained new rows and zero padding rows; `config.vocab_size` is the padded total and the tie is
kept. LoRA adapters (stage `lora`) are merged into their layers. A plain Linear head cannot emit
`-inf`, so padding IDs get logit 0 in the merged model and are listed in
`generation_config.suppress_tokens` so `generate()` never samples them; every real ID's logit equals
the patched model's.

The grown tokenizer is the base tokenizer plus, at their exact IDs: filler tokens `<|unused_i|>` for
base IDs the tokenizer does not use (Qwen3's config.vocab_size exceeds len(tokenizer)), the space's
specials (special tokens) and every codec's code tokens (`uti.codecs.code_tokens`: image codes `<|img_i|>`,
audio codes `<|aud_q_c|>` for level q, code c).

Prompt format (as for `tokenlm generate`, see `uti.sequence.build_prompt`): `[condition block] <|gen_X|>
<|X_start|>`, e.g. `<|text_start|>a red square<|text_end|><|gen_image|><|image_start|>` for an image, or an
encoded image block then `<|gen_text|><|text_start|>` for a caption; the model continues up to `<|X_end|>`,
which a caller passes as `eos_token_id`. Plain `generate()` does not enforce the grammar: pass
`tokenlm.constraints.TokenSpaceLogitsProcessor(TokenSpace.load(OUT / "token_space.json"))` or use the
ranges of `tokenlm rules`. The README shows a complete example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from uti.codecs import code_tokens
from uti.errors import MissingAssetError, UTIError
from uti.hashing import hash_json
from uti.io import LOCAL_PREFIXES, atomic_write_json
from uti.space import TokenSpace

from . import __version__
from .checkpoint import recorded_base
from .generate import load_generator
from .model import grown_modules

__all__ = ["ExportError", "code_token_names", "grown_tokenizer", "merge_model", "export_merged"]


class ExportError(UTIError, ValueError):
    """The merged model or tokenizer could not be written consistently."""


def code_token_names(space: TokenSpace) -> list[tuple[int, str, bool]]:
    """(ID, token string, is_special) for every non-text, non-padding ID of the space, in ID order: the
    specials, then each codec's code tokens (`uti.codecs.code_tokens`)."""
    out = [(i, name, True) for name, i in space.specials.items()]
    out += [(i, name, False) for i, name in code_tokens(space)]
    return sorted(out)


def grown_tokenizer(space: TokenSpace, base_tokenizer: Any) -> Any:
    """A transformers fast tokenizer: `base_tokenizer` (a `tokenizers.Tokenizer`) + the space's tokens at their IDs."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = base_tokenizer
    v = space.ranges["text"].stop
    have = tok.get_vocab_size(with_added_tokens=True)
    if have > v:
        raise ExportError(f"base tokenizer has {have} tokens, more than base_vocab_size {v}")
    tok.add_special_tokens([AddedToken(f"<|unused_{i}|>", special=True) for i in range(have, v)])
    for i, name, special in code_token_names(space):
        (tok.add_special_tokens if special else tok.add_tokens)([AddedToken(name, special=special, normalized=False)])
        if tok.token_to_id(name) != i:
            raise ExportError(f"token {name} got ID {tok.token_to_id(name)}, expected {i}; the base tokenizer already "
                              "defines that string")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>")


def merge_model(model: nn.Module) -> nn.Module:
    """A plain transformers model (grown modules replaced by full nn.Embedding/nn.Linear, LoRA merged)."""
    tied = grown_modules(model)[1].tied
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    emb, head = grown_modules(model)
    model.config.tie_word_embeddings = tied  # PEFT's merge cannot see our tie and would clear it
    with torch.no_grad():
        new_emb = nn.Embedding(emb.num_embeddings, emb.embedding_dim, dtype=emb.base.weight.dtype)
        new_emb.weight.copy_(emb.weight)
        model.set_input_embeddings(new_emb)
        if head.tied:
            new_head = nn.Linear(emb.embedding_dim, emb.num_embeddings, bias=False, dtype=new_emb.weight.dtype)
            new_head.weight = new_emb.weight
        else:
            new_head = nn.Linear(head.in_features, head.out_features, bias=False, dtype=head.base_weight.dtype)
            new_head.weight.copy_(head.weight)
        model.set_output_embeddings(new_head)
    for attr in ("_tied_weights_keys", "all_tied_weights_keys"):
        model.__dict__.pop(attr, None)  # back to the class's tying rules
    model.config.vocab_size = emb.num_embeddings
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _base_tokenizer(space: TokenSpace, base_ref: str) -> Any:
    from uti.text import load_tokenizer, tokenizer_hash

    if "tokenizer" in space.assets:
        tokenizer = load_tokenizer(space.asset("tokenizer"))
        space.check_asset("tokenizer", tokenizer_hash(tokenizer))  # the one pin check (uti.assets.check_pin)
        return tokenizer
    try:
        return load_tokenizer(base_ref)
    except MissingAssetError:
        raise MissingAssetError(f"no tokenizer: the space names no tokenizer asset and {base_ref} has none") from None


def export_merged(rows_dir: str | Path, out_dir: str | Path, base: str | None = None,
                  space: TokenSpace | None = None) -> dict[str, Any]:
    """Write the merged model, grown tokenizer, token_space.json and an export record; returns the record."""
    model, space, manifest = load_generator(rows_dir, base=base, space=space)
    base_ref = recorded_base(rows_dir, manifest) or base or ""
    tokenizer = grown_tokenizer(space, _base_tokenizer(space, str(base or base_ref)))
    merged = merge_model(model)
    pad = space.ranges["padding"]
    merged.generation_config.suppress_tokens = list(range(pad.start, pad.stop)) or None
    merged.generation_config.pad_token_id = space.special_id("<|pad|>")
    merged.config.pad_token_id = space.special_id("<|pad|>")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    atomic_write_json(out / "token_space.json", space.to_json())
    hub_base = manifest.get("base_model") or None  # a local folder is recorded as None: no path leaves this machine
    if hub_base and (hub_base.startswith(LOCAL_PREFIXES) or Path(hub_base).is_absolute()):
        hub_base = None
    record = {"format": "tokenlm-export", "toolkit_version": __version__, "base_model": hub_base,
              "token_space": {"name": space.name, "hash": space.hash}, "rows_manifest_hash": hash_json(manifest),
              "vocab_size": space.total, "tied": manifest["tied"], "stage": manifest["stage"],
              "suppressed_padding": [pad.start, pad.stop]}
    atomic_write_json(out / "tokenlm_export.json", record)
    return record
