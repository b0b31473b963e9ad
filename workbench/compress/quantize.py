"""Mixed-precision INT8 with NNCF: PTQ or QAT of a component, the most important layers kept in float, exported
as a QDQ ONNX model that ONNX Runtime runs with integer kernels; cached like every compressed artifact.

    art, info = quantized_onnx(pipe, "unet", QuantSpec("ptq", keep=0.2, importance="sensitivity"), calib, scores)

PTQ: `nncf.quantize` (min-max statistics over calibration inputs captured from real pipeline runs, fast bias
correction) on the component's export adapter; the kept layers (and the UNet's timestep path) go in
`nncf.IgnoredScope` by the names of their operations in NNCF's graph, found from the graph's weight constants.
QAT: the same quantised model, then distilled toward the float component on the model's own generations
(`workbench.compress.distill`, the pruning knob's recovery code: output KD + BK-SDM feature KD), so weights and
quantiser scales adapt; QAT trains the UNet (the text encoder and VAE decoder get PTQ).
Export: NNCF's quantisers in ONNX quantize-dequantize mode, `torch.onnx.export` (TorchScript exporter).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import time
from pathlib import Path

import torch

from workbench.compress import cache, export
from workbench.compress.calibration import Calibration
from workbench.compress.distill import DistillConfig, distill
from workbench.compress.importance import always_float, most_important
from workbench.compress.specs import QuantSpec

# QAT's distillation (part of the key): KD terms only (the quantised model should match its float self, not move
# toward the data as the task loss would pull it), a lower learning rate than pruning recovery (it starts close)
QAT = {"lr": 1e-4, "batch_size": 16, "seed": 0, "task_weight": 0.0}


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF's per-operation INFO lines and rich progress bars off (its warnings still show)."""
    import logging

    from nncf.common.logging import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)


def kept_layers(component: str, layers: list[str], scores: dict[str, float], keep: float) -> list[str]:
    """Always-float layers plus the top `keep` fraction by importance, in network order."""
    chosen = set(always_float(component, layers)) | set(most_important(scores, keep))
    return [name for name in layers if name in chosen]


def ignored_operations(model: torch.nn.Module, inputs: tuple, prefix: str, layers: list[str]) -> list[str]:
    """NNCF graph operation names of the given layers (the consumers of their weight constants)."""
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    graph = build_nncf_graph(model, inputs)
    wanted = {f"{prefix}.{name}.weight" for name in layers}
    names = []
    for node in graph.get_all_nodes():
        if node.node_type == "nncf_model_const" and node.node_name in wanted:
            names += [nxt.node_name for nxt in graph.get_next_nodes(node)]
    return names


def quantized_onnx(pipe, component: str, spec: QuantSpec, calib: Calibration, scores: dict, importance_key: str,
                   device: torch.device | None = None, progress: bool = False) -> tuple[cache.Artifact, dict]:
    """The QDQ ONNX model of `component` under `spec` (cached), and what went into it."""
    import nncf

    module = export.module_of(pipe, component)
    layers = export.weighted_layers(module)
    keep = kept_layers(component, layers, scores[component], spec.keep)
    qat = spec.mode == "qat" and component == "unet"
    inputs = {"component": component, "weights": cache.state_fingerprint(module), "calibration": calib.key,
              "spec": {**spec.to_dict(), "qat_steps": spec.qat_steps if qat else 0},
              "importance": importance_key if spec.keep else None,
              "kept": hashlib.sha256(",".join(keep).encode()).hexdigest()[:16], "qat": QAT if qat else None,
              "nncf": nncf.__version__, "opset": export.OPSET}

    def build(folder: Path) -> dict:
        from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

        model = copy.deepcopy(export.adapter(pipe, component)).float().cpu()
        example = export.example_inputs(pipe, component)
        t0 = time.time()
        ignored = ignored_operations(model, example, export.PREFIX[component], keep)
        data = calib.inputs(component)
        with _quiet_nncf():
            quantized = nncf.quantize(
                model, nncf.Dataset(data), subset_size=len(data), preset=nncf.QuantizationPreset(spec.preset),
                model_type=nncf.ModelType.TRANSFORMER if component == "text_encoder" else None,
                ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
        quantize_s = time.time() - t0
        qat_s, recovery = 0.0, {}
        if qat and spec.qat_steps:
            t0 = time.time()
            recovery = distill(quantized, export.adapter(pipe, "unet"), calib.samples, pipe.scheduler.config,
                               DistillConfig(steps=spec.qat_steps, **QAT), device=device or "cpu", progress=progress)
            quantized.to("cpu").eval()
            export.adapter(pipe, "unet").to("cpu")
            qat_s = time.time() - t0
        for m in quantized.modules():
            if isinstance(m, BaseQuantizer):
                m.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
        t0 = time.time()
        export.export(quantized, example, component, folder / "model.onnx")
        export.fold_weight_quantizers(folder / "model.onnx")
        export_s = time.time() - t0
        flags = export.quantized_layers(folder / "model.onnx", component)
        return {"cost_s": {"quantize_s": quantize_s, "qat_s": qat_s, "export_s": export_s},
                "kept": keep, "layers": len(layers), "quantized": sorted(k for k, v in flags.items() if v),
                "qat": recovery, "bytes": (folder / "model.onnx").stat().st_size}

    art = cache.cached(f"int8-{component.replace('_', '-')}", inputs, build)
    return art, {"key": art.key, "built": art.built, "kept": art.meta["kept"], "layers": art.meta["layers"],
                 "quantized": len(art.meta["quantized"]), "cost_s": art.meta["cost_s"], "qat": art.meta["qat"]}
