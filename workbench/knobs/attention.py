"""Attention-kernel knob: which of PyTorch's scaled-dot-product-attention kernels every attention layer of the
UNet and VAE may use (`torch.nn.attention.sdpa_kernel`): `sdpa` lets PyTorch choose; `flash` (FlashAttention-2),
`efficient` (memory-efficient, xFormers-style), `cudnn` (cuDNN's fused attention) and `math` (the reference
implementation) pin one. Implemented as a diffusers attention processor that wraps the layer's own (so it composes
with fused projections) and runs it under that kernel choice."""
from __future__ import annotations

from workbench.errors import ConfigError
from workbench.knobs.spec import Field

KERNELS = ("sdpa", "flash", "efficient", "cudnn", "math")
CUDA_ONLY = ("flash", "efficient", "cudnn")
FIELDS = (Field("attention", "sdpa", "sdpa (PyTorch chooses) | flash | efficient | cudnn | math: the SDPA kernel used",
                choices=KERNELS),)


def check(cfg, where: str = "config") -> None:
    if cfg.attention != "sdpa" and cfg.backend != "torch":
        raise ConfigError(f"{where}.attention: chooses torch's attention kernels; backend {cfg.backend} runs ONNX "
                          "graphs. Set attention: sdpa or backend: torch")


def check_device(cfg, device) -> None:
    """Flash, memory-efficient and cuDNN attention are CUDA kernels; flash also needs fp16 or bf16."""
    if cfg.attention in CUDA_ONLY and device.type != "cuda":
        raise ConfigError(f"attention: {cfg.attention} is a CUDA kernel and this trial runs on {device.type}; use "
                          "attention: sdpa or math on a CPU")
    if cfg.attention == "flash" and cfg.precision == "fp32":
        raise ConfigError("attention: flash runs fp16 or bf16 only; set precision: fp16 or bf16, or attention: "
                          "efficient")


class KernelChoice:
    """A diffusers attention processor: the layer's own processor, run under `sdpa_kernel(backend)`."""

    def __init__(self, inner, backend):
        self.inner, self.backend = inner, backend

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        from torch.nn.attention import sdpa_kernel  # heavy

        with sdpa_kernel(self.backend):
            return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=attention_mask, temb=temb, **kwargs)


def apply(pipe, cfg, device) -> None:
    """Wrap every attention processor of the UNet and the VAE (after fused projections, if any, were set)."""
    if cfg.attention == "sdpa":
        return None
    from torch.nn.attention import SDPBackend  # heavy

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[cfg.attention]
    for module in (pipe.unet, pipe.vae):
        module.set_attn_processor({name: KernelChoice(p, backend) for name, p in module.attn_processors.items()})
    return None
