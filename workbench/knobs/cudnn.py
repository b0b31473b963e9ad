"""cuDNN autotuning knob: `torch.backends.cudnn.benchmark`, cuDNN times its convolution algorithms for each new
input shape on first use and keeps the fastest (PyTorch's performance-tuning guide). It acts on eager convolutions
and on those torch.compile leaves to cuDNN (Inductor calls aten's convolution), including inside captured CUDA
graphs; the timing happens in the warm-up batch, never in `latency_s`. The flag is process-wide: every CUDA trial
sets it to its own value, so trials run one after another in one process do not inherit it."""
from __future__ import annotations

from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row

FIELDS = (Field("cudnn_benchmark", False, "cuDNN benchmarks its convolution algorithms per shape and keeps the fastest "
                "(CUDA)"),)


def check(cfg, where: str = "config") -> None:
    if cfg.cudnn_benchmark and cfg.backend != "torch":
        raise ConfigError(f"{where}.cudnn_benchmark: tunes torch's cuDNN convolutions; backend {cfg.backend} runs ONNX "
                          "graphs. Set cudnn_benchmark: false or backend: torch")


def check_device(cfg, device) -> None:
    if cfg.cudnn_benchmark and device.type != "cuda":
        raise ConfigError(f"cudnn_benchmark: cuDNN runs on CUDA devices and this trial runs on {device.type}; set "
                          "cudnn_benchmark: false")


def apply(pipe, cfg, device) -> Row | None:
    if device.type != "cuda":
        return None
    import torch  # heavy

    torch.backends.cudnn.benchmark = bool(cfg.cudnn_benchmark)
    return Row(protocols={"cudnn": {"benchmark": bool(cfg.cudnn_benchmark), "version": torch.backends.cudnn.version()}})
