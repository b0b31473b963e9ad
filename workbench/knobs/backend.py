"""Backend knob: run the pipeline's text encoder, UNet and VAE decoder in torch or as ONNX Runtime sessions
(`backend: onnxruntime`: each component exported once to ONNX and cached; INT8 components come from the quant
knob). Thin: validates the field and asks `workbench.compress` for the cached exports."""
from __future__ import annotations

from workbench.compress.specs import COMPONENTS
from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row
from workbench.models import model_family

BACKENDS = ("torch", "onnxruntime")
FIELDS = (Field("backend", "torch", "torch | onnxruntime (text encoder, UNet and VAE decoder as ONNX Runtime sessions)",
                choices=BACKENDS),)


def check(cfg, where: str = "config") -> None:
    """ONNX Runtime runs SD's fp32 graphs (INT8 comes from the quant knob)."""
    if cfg.backend == "onnxruntime" and model_family(cfg.model, f"{where}.model") == "sdxl":
        raise ConfigError(f"{where}.backend: the ONNX Runtime export handles Stable Diffusion 1.x/2.x pipelines, and "
                          f"{cfg.model!r} is SDXL; set backend: torch or pick an SD model")
    if cfg.backend == "onnxruntime" and cfg.precision != "fp32":
        raise ConfigError(f"{where}.precision: backend onnxruntime runs fp32 graphs (and INT8 with quant: ptq|qat); "
                          f"set precision: fp32 or backend: torch")


def apply(pipe, cfg, device) -> Row | None:
    """Replace every component still in torch by its ONNX Runtime session (fp32 export, cached)."""
    if cfg.backend == "torch":
        return None
    import onnxruntime  # heavy, and only this backend needs it

    from workbench.compress import export, runtime  # heavy: torch, onnx

    report, kept = {}, []
    for component in COMPONENTS:
        if runtime.is_ort(export.module_of(pipe, component)):
            continue  # already INT8 from the quant knob
        if component == "vae_decoder" and cfg.vae != "full":
            kept.append("vae_decoder: the tiny decoder (vae knob), in torch")
            continue  # a tiny decoder (AutoencoderTiny) is not the exported graph, and decodes in a few ms anyway
        art = export.float_onnx(pipe, component, {"model": cfg.model})
        runtime.install(pipe, component, art.folder / "model.onnx", device)
        report[component] = {"key": art.key, "export_s": art.meta["cost_s"]["export_s"], "folder": str(art.folder)}
    protocol = {"onnxruntime": onnxruntime.__version__, "providers": runtime.providers(device),
                "fp32_components": {c: r["key"] for c, r in report.items()}, "torch_components": kept,
                "session": "ORT_ENABLE_ALL graph optimisations, intra-op threads = torch threads"}
    return Row({"export_s": sum(r["export_s"] for r in report.values())}, {"backend": protocol},
               {f"onnx_{c}": r["folder"] for c, r in report.items()})
