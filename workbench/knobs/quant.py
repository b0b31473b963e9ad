"""Quantisation knob: mixed-precision INT8 of chosen components with NNCF, PTQ or QAT (`quant`), the `quant_keep`
fraction of layers ranked most important by `importance` kept in float, NNCF's `quant_preset`, run as QDQ models by
ONNX Runtime. Thin: validates its fields and asks `workbench.compress` for the cached calibration, importance and
quantised ONNX artifacts."""
from __future__ import annotations

from workbench.compress.specs import (COMPONENTS, IMPORTANCE_METHODS, QUANT_MODES, QUANT_PRESETS, QuantSpec,
                                     named_components)
from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row
from workbench.models import model_family
from workbench.prompts import load_prompts, prompt_set_version

MODES = ("none", *QUANT_MODES)
FIELDS = (
    Field("quant", "none", "none | ptq | qat: NNCF INT8 of quant_components, run as QDQ models by ONNX Runtime",
          choices=MODES),
    Field("quant_keep", 0.0, "fraction of layers kept in float, most important first (0: full INT8)", low=0.0,
          high=1.0),
    Field("importance", "sensitivity", "actgrad | sensitivity | random: how layers are ranked for quant_keep",
          choices=IMPORTANCE_METHODS),
    Field("quant_components", "unet", "comma-separated: unet, text_encoder, vae_decoder"),
    Field("quant_preset", "mixed", "NNCF preset: mixed (asymmetric activations: uint8, fused by ORT) | performance",
          choices=QUANT_PRESETS),
    Field("qat_steps", 200, "distillation steps of quant: qat (ignored by ptq)", low=0),
)


def components(cfg) -> list[str]:
    """The components named by `quant_components` ('unet,text_encoder'), in pipeline order."""
    named = named_components(cfg.quant_components)
    return [c for c in COMPONENTS if c in named]


def check(cfg, where: str = "config") -> None:
    """SD models only, components named once each, QAT with steps, INT8 only where it runs as integers (before any
    work)."""
    if cfg.quant != "none" and model_family(cfg.model, f"{where}.model") == "sdxl":
        raise ConfigError(f"{where}.quant: INT8 quantisation handles Stable Diffusion 1.x/2.x pipelines, and "
                          f"{cfg.model!r} is SDXL; set quant: none or pick an SD model")
    named = named_components(cfg.quant_components)
    for c in named:
        if c not in COMPONENTS:
            raise ConfigError(f"{where}.quant_components: {c!r} is not a component; write a comma-separated list of "
                              f"{', '.join(COMPONENTS)}")
    if len(set(named)) != len(named):
        raise ConfigError(f"{where}.quant_components: {cfg.quant_components!r} names a component twice")
    if cfg.quant == "qat" and cfg.qat_steps == 0:
        raise ConfigError(f"{where}.qat_steps: quant: qat needs training steps; set qat_steps >= 1 (or quant: ptq)")
    if cfg.quant != "none" and cfg.backend != "onnxruntime":
        raise ConfigError(f"{where}.backend: quant: {cfg.quant} runs INT8 QDQ models in ONNX Runtime (integer "
                          f"kernels; torch would only fake-quantise in float); set backend: onnxruntime")


def apply(pipe, cfg, device) -> Row | None:
    """Swap the chosen components for their INT8 ONNX Runtime sessions; the row gets build costs and layer counts."""
    if cfg.quant == "none":
        return None
    from workbench.compress import calibration, importance, quantize, runtime  # heavy: torch, nncf, onnxruntime

    chosen = components(cfg)
    calib = calibration.calibration(pipe, load_prompts(cfg.prompt_set), prompt_set_version(cfg.prompt_set))
    ranking = importance.importance(pipe, cfg.importance, calib, chosen) if cfg.quant_keep else {
        "scores": {c: {} for c in chosen}, "key": None, "importance_s": 0.0}
    spec = QuantSpec(cfg.quant, cfg.quant_keep, cfg.importance, cfg.quant_preset, cfg.qat_steps)
    parts, built = {}, []
    for component in chosen:
        art, info = quantize.quantized_onnx(pipe, component, spec, calib, ranking["scores"], ranking["key"], device)
        parts[component] = {**info, "folder": str(art.folder)}
        built.append((component, art.folder / "model.onnx"))
    for component, path in built:  # after every build: calibration and importance need the float components
        runtime.install(pipe, component, path, device)
    metrics = {"calibration_s": calib.build_s, "importance_s": ranking["importance_s"],
               "quantize_s": sum(p["cost_s"]["quantize_s"] for p in parts.values()),
               "qat_s": sum(p["cost_s"]["qat_s"] for p in parts.values()),
               "quantized_layers": sum(p["quantized"] for p in parts.values()),
               "float_layers": sum(len(p["kept"]) for p in parts.values())}
    protocol = {"spec": spec.to_dict(), "calibration": calib.key, "importance": ranking["key"],
                "components": {c: {k: v for k, v in p.items() if k != "cost_s"} for c, p in parts.items()},
                "scheme": "NNCF 8-bit: weights symmetric per output channel, activations per tensor "
                          "(preset performance: symmetric, mixed: asymmetric); QDQ ONNX run by ONNX Runtime"}
    return Row(metrics, {"quant": protocol}, {f"int8_{c}": p["folder"] for c, p in parts.items()})
