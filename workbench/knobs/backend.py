"""Backend knob: run the pipeline's text encoder, UNet and VAE decoder in torch or as ONNX Runtime sessions
(`backend: onnxruntime`: each component exported once to ONNX and cached; INT8 components come from the quant
knob). Thin: validates the field and asks `workbench.compress` for the cached exports."""
from __future__ import annotations

from workbench.errors import ConfigError

BACKENDS = ("torch", "onnxruntime")
COMPONENTS = ("text_encoder", "unet", "vae_decoder")
FIELDS = {"backend": {"choices": BACKENDS}}  # workbench.fields; swaps the components: a rebuild


def check(cfg, where: str = "config") -> None:
    """One ConfigError naming a bad backend field and its fix."""
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"{where}.backend: {cfg.backend!r} is not one of {', '.join(BACKENDS)}")
    if cfg.backend == "onnxruntime" and cfg.precision != "fp32":
        raise ConfigError(f"{where}.precision: backend onnxruntime runs fp32 graphs (and INT8 with quant: ptq|qat); "
                          f"set precision: fp32 or backend: torch")


def apply(pipe, cfg):
    """Replace every component still in torch by its ONNX Runtime session (fp32 export, cached)."""
    pipe.backend_report = None
    if cfg.backend == "torch":
        return pipe
    from workbench.compress import export, runtime
    from workbench.models import resolve_device

    device = resolve_device(cfg.device)
    report = {}
    for component in COMPONENTS:
        if runtime.is_ort(export.module_of(pipe, component)):
            continue  # already INT8 from the quant knob
        art = export.float_onnx(pipe, component, {"model": cfg.model})
        runtime.install(pipe, component, art.folder / "model.onnx", device)
        report[component] = {"key": art.key, "built": art.built, "export_s": art.meta["cost_s"]["export_s"],
                             "folder": str(art.folder)}
    pipe.backend_report = report
    return pipe


def row_fields(pipe) -> tuple[dict, dict, dict]:
    """(metrics, protocols, artifacts) of the backend knob; empty for torch."""
    report = getattr(pipe, "backend_report", None)
    if report is None:
        return {}, {}, {}
    import onnxruntime

    from workbench.compress.runtime import providers

    metrics = {"export_s": sum(r["export_s"] for r in report.values())}
    protocol = {"onnxruntime": onnxruntime.__version__, "providers": providers(pipe.device),
                "fp32_components": {c: r["key"] for c, r in report.items()},
                "session": "ORT_ENABLE_ALL graph optimisations, intra-op threads = torch threads"}
    return metrics, {"backend": protocol}, {f"onnx_{c}": r["folder"] for c, r in report.items()}
