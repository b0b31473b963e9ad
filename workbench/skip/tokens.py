"""Token downsampling of self-attention, after ToDo (Smith, Fang, Ha & Jia, "ToDo: Token Downsampling for Efficient
Generation of High-Resolution Images", 2024): at the UNet's highest-resolution levels, where self-attention over
H*W tokens costs most, queries stay at full resolution while keys and values come from the token grid
downsampled `factor` times per side (nearest neighbour), so attention does factor^2 times less work.

ToDo's simplification of token merging (ToMe for SD, Bolya & Hoffman 2023): no similarity matching, no
unmerging, shapes fixed by the resolution, so it compiles and captures in CUDA graphs like the unmodified UNet.
Implemented as a diffusers attention processor on the self-attention (`attn1`) of the chosen levels' transformer
blocks; it works with separate or fused (`to_qkv`) projections.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F


def level_of(name: str, levels: int) -> int | None:
    """Resolution level (0 = full latent resolution) of an attention processor's module path in a UNet with
    `levels` levels, or None outside the down, mid and up blocks."""
    m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.", name)
    if m:
        i = int(m.group(2))
        return i if m.group(1) == "down_blocks" else levels - 1 - i
    return levels - 1 if name.startswith("mid_block.") else None


class TokenDownsampling:
    """Self-attention with keys and values from the token grid downsampled `factor` times per side."""

    def __init__(self, factor: int):
        self.factor = factor

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3 \
                or attn.group_norm is not None or attn.spatial_norm is not None:
            raise ValueError("token downsampling applies to plain self-attention on a token sequence")
        batch, tokens, channels = hidden_states.shape
        side = math.isqrt(tokens)
        if side * side != tokens or side % self.factor:
            raise ValueError(f"token downsampling needs a square token grid divisible by {self.factor}; got "
                             f"{tokens} tokens (non-square or odd latent sizes are not supported)")
        grid = hidden_states.transpose(1, 2).reshape(batch, channels, side, side)
        small = grid[:, :, ::self.factor, ::self.factor].flatten(2).transpose(1, 2)

        if getattr(attn, "fused_projections", False):
            w, b = attn.to_qkv.weight, attn.to_qkv.bias
            inner = w.shape[0] // 3
            query = F.linear(hidden_states, w[:inner], None if b is None else b[:inner])
            key, value = F.linear(small, w[inner:], None if b is None else b[inner:]).chunk(2, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(small), attn.to_v(small)
        head = query.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def downsample_self_attention(unet, factor: int, levels: int) -> list[str]:
    """Give the self-attention of every transformer block in the `levels` highest-resolution levels that have
    attention (SD1.5: level 0, 64x64 tokens at 512²) a TokenDownsampling processor; returns their names (the other
    processors are kept)."""
    n = len(unet.down_blocks)
    processors = dict(unet.attn_processors)
    self_attention = {name: level_of(name, n) for name in processors if ".attn1." in name}
    kept = sorted({level for level in self_attention.values() if level is not None})[:levels]
    chosen = [name for name, level in self_attention.items() if level in kept]
    processors.update({name: TokenDownsampling(factor) for name in chosen})
    unet.set_attn_processor(processors)
    return chosen


__all__ = ["TokenDownsampling", "downsample_self_attention", "level_of"]
