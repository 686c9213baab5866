"""Write token_spaces/qwen3-siglip2-encodec/token_space.json without the model weights.

The ABI is composed from the published architecture of Qwen3 (config.vocab_size 151936), SigLIP2
SO400M patch14-384 (width 1152, mean/std 0.5, a 27x27 patch grid) and EnCodec 24 kHz (75 Hz, 8 x 1024 codes
at 6 kbps). The image token grid comes from space.yaml's `image.token_grid` (13x13: 169 codes per view of
the 27x27 patch features average-pooled; absent: 729).
Content hashes are null (unpinned): a space built with `uti space build` on a machine holding the
weights pins them, and its hash then differs, as it should.
"""

from __future__ import annotations

from pathlib import Path

from uti.build import SpaceConfig
from uti.config import from_dict, read_config_file
from uti.image.layout import Layout
from uti.space import SCHEMA, TokenSpace
from uti.specials import default_specials

OUT = Path(__file__).resolve().parent.parent / "token_spaces" / "qwen3-siglip2-encodec"
TOWER = {"architecture": "siglip", "image_size": 384, "patch_size": 14, "hidden_size": 1152,
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
CODEBOOK = {"size": 16384, "dim": 1152, "metric": "euclidean"}
ENCODEC = {"codec": "encodec", "sample_rate": 24000, "frame_rate": 75, "hop_length": 320, "num_codebooks": 8,
           "codebook_size": 1024, "order": "frame_major", "channels": "mono_mean", "chunk_frames": 2250}


def main() -> None:
    cfg = from_dict(SpaceConfig, read_config_file(OUT / "space.yaml"))
    layout = Layout(**cfg.image["layout"])
    grid = TOWER["image_size"] // TOWER["patch_size"]
    pooled = cfg.image.get("token_grid")  # [h, w] or None (no pooling)
    image = {
        "layout": layout.abi(), "antialias": 1, "feature_layer": -1,
        "tower": {"name": cfg.assets["vision_tower"], "weights_hash": None, "feature_layer": -1, **TOWER},
        "image_size": TOWER["image_size"], "patch_size": TOWER["patch_size"], "grid": [grid, grid],
        **({"token_grid": list(pooled)} if pooled else {}),
        "tokens_per_view": pooled[0] * pooled[1] if pooled else grid * grid,
        "codebook": {"hash": None, **CODEBOOK}, "codebook_size": CODEBOOK["size"],
    }
    audio = {"model": cfg.assets["audio_codec"], "weights_hash": None, "config_hash": None,
             "bandwidth": cfg.audio["bandwidth"], **ENCODEC}
    abi = {"schema": SCHEMA,
           "text": {"tokenizer": cfg.text.tokenizer, "tokenizer_hash": None, "base_vocab_size": cfg.text.base_vocab_size},
           "specials": default_specials(layout.num_tiles, layout.global_view),
           "image": image, "audio": audio, "pad_to_multiple": cfg.pad_to_multiple}
    space = TokenSpace.from_abi(abi, name=cfg.name, assets=cfg.assets, description=cfg.description)
    space.save(OUT / "token_space.json")
    print(f"wrote {space.path} hash {space.hash} total {space.total}")


if __name__ == "__main__":
    main()
