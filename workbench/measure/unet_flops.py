"""FLOPs of the UNet calls a trial made, counted on the meta device: no weights copied, no kernel run.

    total, per_call, method = count_calls(pipe.unet, keys, timer.examples)   # keys: timer.inputs["unet"]
    copy, method = meta_copy(pipe.unet)           # LookupError(reason) for a UNet run by ONNX Runtime

torch's FlopCounterMode counts matmuls, convolutions and attention. On the meta device scaled_dot_product_attention
takes its math path (two batched matmuls), which counts the same as FlopCounterMode's formula for the CUDA flash
and memory-efficient kernels; on a real CPU run the fused CPU SDPA kernel goes uncounted (REFERENCE.md).
"""
from __future__ import annotations

import copy

import torch

from workbench.measure.cost import count_flops


def meta_copy(unet) -> tuple[torch.nn.Module, str]:
    """(the UNet rebuilt on the meta device, how): from its config (diffusers' `from_config`) when that reproduces
    every parameter and buffer shape, else (a pruned UNet, whose config no longer describes it) a deep copy with
    each tensor swapped for a meta tensor of its shape. A torch.compile'd UNet is copied through `_orig_mod`."""
    module = getattr(unet, "_orig_mod", unet)  # torch.compile's OptimizedModule wraps the eager module
    if any(hasattr(m, "onnx_params") for m in module.modules()):
        raise LookupError("the UNet runs as an ONNX Runtime session, which torch's FlopCounterMode cannot see; the "
                          "torch-backend row of the same model has the count")
    shapes = _shapes(module)
    if hasattr(module, "config") and hasattr(type(module), "from_config"):
        with torch.device("meta"):
            rebuilt = type(module).from_config(module.config)
        if _shapes(rebuilt) == shapes:  # in the dtype the UNet runs in: its inputs come in that dtype
            return rebuilt.to(dtype=next(module.parameters()).dtype).eval(), "from_config on the meta device"
    tensors = list(module.parameters()) + list(module.buffers())
    memo = {id(t): _meta_like(t) for t in tensors}
    rebuilt = copy.deepcopy(module, memo)
    for m in rebuilt.modules():  # nn.Module.compile() in place (of the UNet, or of a feature cache's paths): eager
        m._compiled_call_impl = None
        m.__dict__.pop("forward", None)  # a forward set on the instance (CUDA-graph replays): the class's, eager
    return rebuilt.eval(), "deep copy of the module with meta tensors (its structure differs from its config)"


def count_calls(unet, keys: list, examples: dict) -> tuple[int, dict, str]:
    """(FLOPs of all the calls, FLOPs of one call per input signature, how the meta copy was built).

    `keys[i]` is the i-th call's input signature and `examples[key]` its arguments on meta (cost.StageTimer):
    each distinct signature, e.g. the CFG batch 2B and the batch B after a CFG cutoff, is counted once."""
    module, method = meta_copy(unet)
    per_call = {key: count_call(module, *examples[key]) for key in dict.fromkeys(keys)}
    return sum(per_call[key] for key in keys), per_call, method


def count_call(module: torch.nn.Module, args: tuple, kwargs: dict) -> int:
    """FLOPs of one forward at these (meta) arguments, by torch's FlopCounterMode."""
    out: dict = {}
    with torch.no_grad(), count_flops(out):
        module(*args, **kwargs)
    return out["flops"]


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    """A plain meta tensor of `t`'s shape and dtype. A torchao-quantised weight (a tensor subclass without a meta
    version) becomes its logical float shape: the same matmul, the same FLOPs."""
    meta = torch.empty(t.shape, dtype=t.dtype, device="meta")
    return torch.nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, torch.nn.Parameter) else meta


def _shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {name: tuple(t.shape) for name, t in list(module.named_parameters()) + list(module.named_buffers())}
