"""Quantisation knob: mixed-precision INT8 of chosen components with NNCF, PTQ or QAT (`quant`), the `quant_keep`
fraction of layers ranked most important by `importance` kept in float, NNCF's `quant_preset`, run as QDQ models by
ONNX Runtime. Thin: validates its fields and asks `workbench.compress` for the cached calibration, importance and
quantised ONNX artifacts."""
from __future__ import annotations

from workbench.errors import ConfigError

MODES = ("none", "ptq", "qat")                              # = ("none",) + workbench.compress.quantize.MODES
IMPORTANCE = ("actgrad", "sensitivity", "random")           # = workbench.compress.importance.METHODS
COMPONENTS = ("unet", "text_encoder", "vae_decoder")        # = workbench.compress.export.COMPONENTS
PRESETS = ("mixed", "performance")                          # = workbench.compress.quantize.PRESETS
FIELDS = {"quant": {"choices": MODES}, "quant_keep": {"low": 0.0, "high": 1.0}, "importance": {"choices": IMPORTANCE},
          "quant_preset": {"choices": PRESETS}, "qat_steps": {"low": 0}}  # workbench.fields; all need a rebuild


def components(cfg) -> list[str]:
    """The components named by `quant_components` ('unet,text_encoder'), in pipeline order."""
    named = [c.strip() for c in cfg.quant_components.split(",") if c.strip()]
    return [c for c in COMPONENTS if c in named]


def check(cfg, where: str = "config") -> None:
    """One ConfigError naming the first bad quantisation field and its fix (before any work)."""
    if cfg.quant not in MODES:
        raise ConfigError(f"{where}.quant: {cfg.quant!r} is not one of {', '.join(MODES)}")
    if not 0.0 <= cfg.quant_keep <= 1.0:
        raise ConfigError(f"{where}.quant_keep: is the fraction of layers kept in float, 0.0 to 1.0, got {cfg.quant_keep}")
    if cfg.importance not in IMPORTANCE:
        raise ConfigError(f"{where}.importance: {cfg.importance!r} is not one of {', '.join(IMPORTANCE)}")
    if cfg.quant_preset not in PRESETS:
        raise ConfigError(f"{where}.quant_preset: {cfg.quant_preset!r} is not one of {', '.join(PRESETS)} "
                          "(NNCF presets: symmetric or asymmetric activations)")
    named = [c.strip() for c in cfg.quant_components.split(",")]
    for c in named:
        if c not in COMPONENTS:
            raise ConfigError(f"{where}.quant_components: {c!r} is not a component; write a comma-separated list of "
                              f"{', '.join(COMPONENTS)}")
    if len(set(named)) != len(named):
        raise ConfigError(f"{where}.quant_components: {cfg.quant_components!r} names a component twice")
    if cfg.qat_steps < 0:
        raise ConfigError(f"{where}.qat_steps: must be >= 0 distillation steps, got {cfg.qat_steps}")
    if cfg.quant == "qat" and cfg.qat_steps == 0:
        raise ConfigError(f"{where}.qat_steps: quant: qat needs training steps; set qat_steps >= 1 (or quant: ptq)")
    if cfg.quant != "none" and cfg.backend != "onnxruntime":
        raise ConfigError(f"{where}.backend: quant: {cfg.quant} runs INT8 QDQ models in ONNX Runtime (integer "
                          f"kernels; torch would only fake-quantise in float); set backend: onnxruntime")


def apply(pipe, cfg):
    """Swap the chosen components for their INT8 ONNX Runtime sessions; report to `pipe.quant_report`."""
    pipe.quant_report = None
    if cfg.quant == "none":
        return pipe
    from workbench.compress import calibration, importance, quantize, runtime
    from workbench.models import resolve_device
    from workbench.prompts import load_prompts, prompt_set_version

    device = resolve_device(cfg.device)
    chosen = components(cfg)
    calib = calibration.calibration(pipe, load_prompts(cfg.prompt_set), prompt_set_version(cfg.prompt_set))
    ranking = importance.importance(pipe, cfg.importance, calib, chosen) if cfg.quant_keep else {
        "scores": {c: {} for c in chosen}, "key": None, "importance_s": 0.0}
    spec = quantize.QuantSpec(cfg.quant, cfg.quant_keep, cfg.importance, cfg.quant_preset, cfg.qat_steps)
    report = {"spec": spec.to_dict(), "calibration": calib.key, "calibration_s": calib.build_s,
              "importance": ranking["key"], "importance_s": ranking["importance_s"], "components": {}}
    built = []
    for component in chosen:
        art, info = quantize.quantized_onnx(pipe, component, spec, calib, ranking["scores"], ranking["key"], device)
        report["components"][component] = {**info, "folder": str(art.folder)}
        built.append((component, art.folder / "model.onnx"))
    for component, path in built:  # after every build: calibration and importance need the float components
        runtime.install(pipe, component, path, device)
    pipe.quant_report = report
    return pipe


def row_fields(pipe) -> tuple[dict, dict, dict]:
    """(metrics, protocols, artifacts) of the quant knob for the trial's row; empty when quantisation is off."""
    report = getattr(pipe, "quant_report", None)
    if not report:
        return {}, {}, {}
    parts = report["components"].values()
    metrics = {"calibration_s": report["calibration_s"], "importance_s": report["importance_s"],
               "quantize_s": sum(p["cost_s"]["quantize_s"] for p in parts),
               "qat_s": sum(p["cost_s"]["qat_s"] for p in parts),
               "quantized_layers": sum(p["quantized"] for p in parts),
               "float_layers": sum(len(p["kept"]) for p in parts)}
    protocol = {**{k: report[k] for k in ("spec", "calibration", "importance")},
                "components": {c: {k: v for k, v in p.items() if k != "cost_s"} for c, p in report["components"].items()},
                "scheme": "NNCF 8-bit: weights symmetric per output channel, activations per tensor "
                          "(preset performance: symmetric, mixed: asymmetric); QDQ ONNX run by ONNX Runtime"}
    return metrics, {"quant": protocol}, {f"int8_{c}": p["folder"] for c, p in report["components"].items()}
