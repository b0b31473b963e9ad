"""Tiny decoder shapes for the bundled model's VAE: each distilled as `vae: tiny` is (same data, steps, seed; its own
cached artifact), then its held-out PSNR to the full decoder, its build time and its decode speed-up on this CPU.

    python -m benchmarks.tiny_decoder_shapes docs/skipping-data/cpu-tiny-decoder-variants.json

Speed: median of 30 calls of each decoder at batch 8 after 3 warm-up calls (not interleaved; `benchmarks.vae_decode`
times the shipped shapes in interleaved rounds). The shapes: TAESD's (what `vae: tiny` builds), one block a stage
at width 16, one block a stage at width 8 (`vae: tiny-narrow` has these decoder widths and blocks).
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from workbench.compress import tiny_vae
from workbench.models import load_pipeline
from workbench.prompts import load_prompts, prompt_set_version

SHAPES = {"TAESD-shaped (current)": {}, "1 block a stage": {"num_decoder_blocks": (1, 1, 1)},
          "1 block a stage, width 8": {"num_decoder_blocks": (1, 1, 1), "decoder_block_out_channels": (8, 8, 8)}}


def median_ms(fn, n: int = 30) -> float:
    with torch.no_grad():
        for _ in range(3):
            fn()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main(out_path: str) -> None:
    base = tiny_vae.tiny_config
    out = {}
    try:
        for name, over in SHAPES.items():
            tiny_vae.tiny_config = lambda vae, shape="tiny", over=over: {**base(vae), **over}
            pipe = load_pipeline("reference")
            tiny, report = tiny_vae.distilled_decoder(pipe, load_prompts("world-v1"), prompt_set_version("world-v1"),
                                                      torch.device("cpu"), progress=False)
            vae, tiny = pipe.vae.eval(), tiny.eval()
            z = torch.randn(8, vae.config.latent_channels, 16, 16)
            full, small = median_ms(lambda: vae.decode(z).sample), median_ms(lambda: tiny.decode(z).sample)
            out[name] = {"config": {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in tiny_vae.tiny_config(vae).items()},
                         "decoder_params": sum(p.numel() for p in tiny.decoder.parameters()),
                         "held_out": report["held_out"], "cost_s": report["cost_s"], "built": report["built"],
                         "full_ms": full, "tiny_ms": small, "speedup": full / small}
            print(name, json.dumps(out[name]), flush=True)
    finally:
        tiny_vae.tiny_config = base
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
