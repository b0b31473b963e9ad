"""ONNX export of the pipeline's components as cached artifacts, and the map from ONNX nodes back to torch layers.

    art = float_onnx(pipe, "unet", model_id)        # -> Artifact with model.onnx (+ build cost in meta.json)

Components are exported through thin adapters with plain tensor signatures (`torch.onnx.export(dynamo=False)`, the
TorchScript exporter: it names every node by the module scope it came from, e.g. `/down_blocks.0/resnets.0/conv1/
Conv`, which is how a layer's fully qualified name is found again in the graph). Batch (and the latent size) are
dynamic axes, so one file serves every batch size and resolution.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import torch
from torch import nn

from workbench.compress import cache
from workbench.compress.specs import COMPONENTS

OPSET = 17
WEIGHTED = (nn.Conv2d, nn.Linear)


class UNetAdapter(nn.Module):
    """UNet as (sample, timestep[B] float, encoder_hidden_states) -> noise prediction."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]

    # the UNet's blocks, so feature distillation (compress.distill) finds them on the adapter too
    down_blocks = property(lambda self: self.unet.down_blocks)
    mid_block = property(lambda self: self.unet.mid_block)
    up_blocks = property(lambda self: self.unet.up_blocks)


class TextAdapter(nn.Module):
    """Text encoder as input_ids -> last hidden state (what Stable Diffusion conditions on)."""

    def __init__(self, text_encoder: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids, return_dict=False)[0]


class DecoderAdapter(nn.Module):
    """VAE decoder as latents (after post_quant_conv) -> image in [-1, 1]."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, z):
        return self.decoder(z)


def module_of(pipe, component: str) -> nn.Module:
    """The torch module a component name stands for."""
    return {"unet": lambda: pipe.unet, "text_encoder": lambda: pipe.text_encoder,
            "vae_decoder": lambda: pipe.vae.decoder}[component]()


def adapter(pipe, component: str) -> nn.Module:
    """The export/quantisation adapter around a component (it shares the component's weights)."""
    kind = {"unet": UNetAdapter, "text_encoder": TextAdapter, "vae_decoder": DecoderAdapter}[component]
    return kind(module_of(pipe, component)).eval()


PREFIX = {"unet": "unet", "text_encoder": "text_encoder", "vae_decoder": "decoder"}  # adapter attribute names


def io_spec(component: str) -> tuple[list[str], list[str], dict]:
    """Input names, output names and dynamic axes of a component's ONNX graph."""
    if component == "unet":
        names = ["sample", "timestep", "encoder_hidden_states"]
        axes = {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                "encoder_hidden_states": {0: "batch"}, "out": {0: "batch", 2: "height", 3: "width"}}
    elif component == "text_encoder":
        names, axes = ["input_ids"], {"input_ids": {0: "batch"}, "out": {0: "batch"}}
    else:
        names, axes = ["z"], {"z": {0: "batch", 2: "height", 3: "width"}, "out": {0: "batch", 2: "height", 3: "width"}}
    return names, ["out"], axes


def example_inputs(pipe, component: str, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs of the right shapes and dtypes for tracing (values do not matter)."""
    gen = torch.Generator().manual_seed(0)
    tokens = int(pipe.tokenizer.model_max_length)
    if component == "unet":
        c = pipe.unet.config
        return (torch.randn(batch, c.in_channels, c.sample_size, c.sample_size, generator=gen),
                torch.full((batch,), 500.0), torch.randn(batch, tokens, pipe.text_encoder.config.hidden_size,
                                                         generator=gen))
    if component == "text_encoder":
        return (torch.randint(0, pipe.tokenizer.vocab_size, (batch, tokens), generator=gen),)
    c = pipe.unet.config
    return (torch.randn(batch, pipe.vae.config.latent_channels, c.sample_size, c.sample_size, generator=gen),)


def export(model: nn.Module, inputs: tuple, component: str, path: Path) -> None:
    """torch.onnx.export (TorchScript exporter, opset 17) with the component's names and dynamic axes."""
    import warnings

    names, outputs, axes = io_spec(component)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes: shapes are dynamic
        torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)


def float_onnx(pipe, component: str, source: dict, progress: bool = False) -> cache.Artifact:
    """The fp32 ONNX graph of a component (cached per weights fingerprint, code version and opset)."""
    module = module_of(pipe, component)
    inputs = {"component": component, "weights": cache.state_fingerprint(module), "opset": OPSET,
              "torch": torch.__version__.split("+")[0], **source}

    def build(folder: Path) -> dict:
        t0 = time.time()
        export(adapter(pipe, component), example_inputs(pipe, component), component, folder / "model.onnx")
        return {"cost_s": {"export_s": time.time() - t0}, "bytes": (folder / "model.onnx").stat().st_size}

    return cache.cached(f"onnx-{component.replace('_', '-')}", inputs, build)


def fold_weight_quantizers(path: Path) -> int:
    """Store quantised weights as INT8 initializers: QuantizeLinear(float weight) -> its integer result, feeding the
    DequantizeLinear directly (the QDQ form ONNX Runtime's quantize_static writes; the file shrinks ~4x for those
    weights and the graph is unchanged in meaning). Returns how many weights were folded."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def value(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        return numpy_helper.to_array(next(a.t for a in constants[name].attribute if a.name == "value"))

    folded, drop = 0, []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        w, scale, zero = value(node.input[0]), value(node.input[1]), value(node.input[2])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim:
            shape[axis] = -1
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(w / scale.reshape(shape)) + zero.reshape(shape).astype(np.int32), info.min, info.max)
        tensor = numpy_helper.from_array(q.astype(zero.dtype), name=node.output[0])
        graph.initializer.append(tensor)
        drop.append(node)
        folded += 1
    used_elsewhere = {i for n in graph.node if n not in drop for i in n.input}
    for node in drop:
        graph.node.remove(node)
    for name in {n.input[0] for n in drop} - used_elsewhere:
        graph.initializer.remove(inits[name])
    onnx.save(model, str(path))
    return folded


def weighted_layers(module: nn.Module) -> list[str]:
    """Fully qualified names of a module's Conv2d / Linear layers, in network (registration) order."""
    return [name for name, m in module.named_modules() if isinstance(m, WEIGHTED)]


def node_layer(node_name: str, prefix: str) -> str | None:
    """The torch layer an exported Conv / MatMul / Gemm node came from: '/unet/down_blocks.0/attn/to_q/MatMul' ->
    'down_blocks.0.attn.to_q' (None for nodes outside the adapter's component)."""
    m = re.fullmatch(rf"/{re.escape(prefix)}/(.+)/(?:Conv|MatMul|Gemm|ConvInteger|MatMulInteger)(?:_\d+)?", node_name)
    return m[1].replace("/", ".") if m else None


def quantized_layers(onnx_path: Path, component: str) -> dict[str, bool]:
    """For every Conv / MatMul / Gemm with a weight in the graph: is its weight fed through a DequantizeLinear?

    That is the integer QDQ pattern ONNX Runtime fuses into integer kernels (QLinearConv, MatMulInteger)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {i.name for i in graph.initializer}
    result: dict[str, bool] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        layer = node_layer(node.name, PREFIX[component])
        if layer is None or len(node.input) < 2:
            continue
        weight = node.input[1]
        source = producer.get(weight)
        while source is not None and source.op_type in ("Transpose", "Reshape", "Identity"):
            weight = source.input[0]
            source = producer.get(weight)
        if source is not None and source.op_type == "DequantizeLinear":
            result[layer] = True
        elif weight in initializers or (source is not None and source.op_type == "Constant"):
            result[layer] = False
    return result
