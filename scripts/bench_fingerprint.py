"""Time `tokenlm.fingerprint.model_fingerprint` on a Qwen3-0.6B-shaped random model built from its config.

    python scripts/bench_fingerprint.py            # fp32 and bf16 copies of the same random weights

Prints seconds per fingerprint for each dtype and whether the two agree (they must: dtype-independent).
"""

from __future__ import annotations

import json
import time

import torch


def qwen3_06b_shaped() -> torch.nn.Module:
    """Qwen3-0.6B's architecture (28 layers, width 1024, vocab 151936, tied) with random weights."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                      max_position_embeddings=40960)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(cfg)
    model = model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives the head its own storage; share it again as the real model does
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=gen)
        for b in model.buffers():  # rotary inv_freq: recompute as the model would
            b.copy_(1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, 128, 2).float() / 128)))
    return model.eval()


def main() -> None:
    from tokenlm.fingerprint import model_fingerprint

    model = qwen3_06b_shaped()
    out = {"params": sum(p.numel() for p in model.parameters())}
    for name in ("float32", "bfloat16"):
        if name == "bfloat16":
            model = model.to(torch.bfloat16)
        model_fingerprint(model)  # warm-up
        t0 = time.perf_counter()
        runs = 5
        for _ in range(runs):
            fp = model_fingerprint(model)
        out[name] = {"seconds": round((time.perf_counter() - t0) / runs, 4), "fingerprint": fp}
    out["agree"] = out["float32"]["fingerprint"] == out["bfloat16"]["fingerprint"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
