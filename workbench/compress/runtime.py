"""ONNX Runtime sessions standing in for the pipeline's torch components, so diffusers and the stage timers work.

    pipe.unet = OrtUNet(session("model.onnx"), pipe.unet.config)

Each stand-in is an `nn.Module` with no parameters (diffusers moves, inspects and calls it like the original;
`workbench.measure.cost.StageTimer`'s forward hooks time it) whose forward runs an `InferenceSession`:
CPUExecutionProvider here, CUDAExecutionProvider first where onnxruntime has it. `onnx_params` and
`weight_bytes` give the row its parameter count and model size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def providers(device: torch.device) -> list[str]:
    """CUDA provider for a CUDA device when this onnxruntime build has it, else the CPU provider."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(path: Path | str, device: torch.device | str = "cpu", threads: int | None = None):
    """An InferenceSession with all graph optimisations (QDQ fusion into integer kernels) and torch's thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the optimiser's notes about unused initializers are not ours
    return ort.InferenceSession(str(path), options, providers=providers(torch.device(device)))


class _OrtModule(nn.Module):
    """Common part: the session, its file size, and the device/dtype diffusers asks components for."""

    def __init__(self, sess, path: Path | str):
        super().__init__()
        self.session, self.path = sess, str(path)
        self.onnx_params, self.weight_bytes = graph_weights(path)
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # follows .to(device) for `device`

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def run(self, **feeds: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {k: v.detach().cpu().numpy() for k, v in feeds.items()})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(self.device)


class OrtUNet(_OrtModule):
    """The UNet's call signature over an ONNX Runtime session (epsilon prediction only, like the exported graph)."""

    def __init__(self, sess, path, config):
        super().__init__(sess, path)
        self.config = config

    def forward(self, sample, timestep, encoder_hidden_states, *args, return_dict: bool = True, **kwargs):
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
        out = self.run(sample=sample.float(), timestep=t.contiguous(), encoder_hidden_states=encoder_hidden_states.float())
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


class OrtTextEncoder(_OrtModule):
    """The CLIP text encoder's call signature (last hidden state) over an ONNX Runtime session."""

    def __init__(self, sess, path, config):
        super().__init__(sess, path)
        self.config = config

    def forward(self, input_ids, attention_mask=None, output_hidden_states: bool = False, **kwargs):
        if output_hidden_states:
            raise ValueError("backend onnxruntime: the exported text encoder returns its last hidden state only "
                             "(clip_skip is not supported)")
        return (self.run(input_ids=input_ids.long()),)


class OrtDecoder(_OrtModule):
    """The VAE decoder (`vae.decoder`, after post_quant_conv) over an ONNX Runtime session."""

    def forward(self, z, latent_embeds=None):
        return self.run(z=z.float())


def install(pipe, component: str, path: Path | str, device: torch.device) -> None:
    """Replace a component of `pipe` by its ONNX Runtime stand-in."""
    sess = session(path, device)
    if component == "unet":
        pipe.unet = OrtUNet(sess, path, pipe.unet.config)
    elif component == "text_encoder":
        pipe.text_encoder = OrtTextEncoder(sess, path, pipe.text_encoder.config)
    else:
        pipe.vae.decoder = OrtDecoder(sess, path)


def graph_weights(path: Path | str) -> tuple[int, int]:
    """(parameters, bytes) of a graph's weight initializers at their stored type: INT8 weights of a QDQ graph
    (workbench.compress.export.fold_weight_quantizers) count one byte each, float ones four."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    scales = {i for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for i in n.input[1:]}
    params = size = 0
    for init in graph.initializer:
        if init.name in scales or init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                          onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            continue
        n = int(numpy_helper.to_array(init).size)
        if n < 2:
            continue  # scalar constants of the graph, not weights
        params += n
        size += n * numpy_helper.to_array(init).itemsize
    return params, size


def is_ort(module: nn.Module) -> bool:
    return isinstance(module, _OrtModule)
