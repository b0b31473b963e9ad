"""Fused-projection knob: one matmul for each attention layer's query, key and value projections (two for
cross-attention: Q, then K and V together), diffusers' `fuse_qkv_projections()` on the UNet and the VAE (only a
full `AutoencoderKL` has attention to fuse: with a tiny decoder the UNet alone is fused)."""
from __future__ import annotations

from workbench.errors import ConfigError
from workbench.knobs.spec import Field

FIELDS = (Field("fuse_qkv", False, "fuse each attention layer's Q, K and V projections into one matmul"),)


def check(cfg, where: str = "config") -> None:
    if cfg.fuse_qkv and cfg.backend != "torch":
        raise ConfigError(f"{where}.fuse_qkv: fuses torch attention layers; backend {cfg.backend} runs ONNX graphs. "
                          "Set fuse_qkv: false or backend: torch")


def apply(pipe, cfg, device) -> None:
    if not cfg.fuse_qkv:
        return None
    from diffusers import AutoencoderKL  # heavy: torch

    # the pipeline's own method refuses any VAE but AutoencoderKL (a tiny decoder has no attention)
    pipe.fuse_qkv_projections(vae=isinstance(pipe.vae, AutoencoderKL))
    return None
