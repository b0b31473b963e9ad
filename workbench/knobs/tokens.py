"""Token-downsampling knob (ToDo, Smith et al. 2024; the simpler, compile-friendly kin of ToMe for SD, Bolya &
Hoffman 2023): self-attention at the highest-resolution levels attends to keys and values of the token grid
downsampled `token_downsample` times per side. Thin: `workbench.skip.tokens` holds the attention processor."""
from __future__ import annotations

from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row

FIELDS = (
    Field("token_downsample", 1, "ToDo: keys/values of self-attention downsampled N times per side, 1 (off) .. 4",
          low=1, high=4),
    Field("token_levels", 1, "ToDo: how many of the highest-resolution levels with attention it applies to", low=1,
          high=4),
)


def check(cfg, where: str = "config") -> None:
    if cfg.token_downsample > 1 and cfg.backend != "torch":
        raise ConfigError(f"{where}.token_downsample: changes torch attention layers; backend {cfg.backend} runs "
                          "ONNX graphs. Set token_downsample: 1 or backend: torch")


def apply(pipe, cfg, device) -> Row | None:
    if cfg.token_downsample <= 1:
        return None
    from workbench.skip.tokens import downsample_self_attention  # heavy: torch

    layers = downsample_self_attention(pipe.unet, cfg.token_downsample, cfg.token_levels)
    if not layers:
        raise ConfigError("token_downsample: this UNet has no self-attention layers to downsample; set "
                          "token_downsample: 1")
    return Row({"token_layers": len(layers)}, {"tokens": {
        "method": "ToDo (Smith et al. 2024): keys and values from the token grid subsampled (nearest neighbour) "
                  f"{cfg.token_downsample}x per side, queries at full resolution",
        "levels": cfg.token_levels, "layers": layers}})
