"""VAE upcast knob: how an fp16 SDXL pipeline decodes. diffusers' SDXL pipelines decode in fp32 when the VAE is
fp16 and its config says `force_upcast` (SDXL's VAE overflows in fp16): each image they cast the whole VAE to fp32,
decode and cast it back. Under `torch.compile` the decoder's weights then change dtype and address every image.

    auto   diffusers' behaviour (the default)
    fp32   keep the VAE in fp32 for good: the same arithmetic as `auto`, no casting per image (the latents are cast
           on the way in)
    off    decode in fp16 like the rest: for VAEs that are stable in fp16 (e.g. madebyollin/sdxl-vae-fp16-fix, or
           random-weight presets); a VAE that overflows gives non-finite pixels, and the trial fails saying so

Applied after precision (it acts on the placed, cast VAE), before compile (which compiles the decoder it leaves)."""
from __future__ import annotations

from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row
from workbench.models import model_family

MODES = ("auto", "fp32", "off")
FIELDS = (Field("vae_upcast", "auto", "auto (diffusers: an fp16 SDXL VAE decodes in fp32, recast every image) | fp32 "
                "(kept in fp32, no recasting) | off (decodes in fp16: needs an fp16-stable VAE)", choices=MODES),)


def check(cfg, where: str = "config") -> None:
    if cfg.vae_upcast == "auto":
        return
    if cfg.precision != "fp16":
        raise ConfigError(f"{where}.vae_upcast: {cfg.vae_upcast} changes how an fp16 VAE decodes and precision is "
                          f"{cfg.precision} (diffusers upcasts only fp16); set vae_upcast: auto or precision: fp16")
    if cfg.backend != "torch":
        raise ConfigError(f"{where}.vae_upcast: acts on torch's VAE and backend {cfg.backend} decodes with ONNX "
                          "Runtime; set vae_upcast: auto or backend: torch")
    if cfg.vae != "full":
        raise ConfigError(f"{where}.vae_upcast: a tiny decoder (vae: {cfg.vae}) is never upcast; set vae_upcast: auto "
                          "or vae: full")
    if model_family(cfg.model, f"{where}.model") != "sdxl":  # only diffusers' SDXL pipelines upcast their VAE
        raise ConfigError(f"{where}.vae_upcast: {cfg.vae_upcast} changes nothing here ({cfg.model} is SD 1.x/2.x: "
                          "StableDiffusionPipeline never upcasts its VAE); set vae_upcast: auto")


def apply(pipe, cfg, device) -> Row | None:
    if cfg.vae_upcast == "auto":
        return None
    import torch  # heavy

    vae = pipe.vae
    if not getattr(vae.config, "force_upcast", False):  # known only once the model's VAE is loaded
        raise ConfigError(f"vae_upcast: {cfg.vae_upcast} changes nothing here (this model's VAE config has "
                          "force_upcast false: it already decodes in fp16); set vae_upcast: auto")
    vae.register_to_config(force_upcast=False)  # the pipeline's own per-image recasting stays off from now on
    if cfg.vae_upcast == "fp32":
        vae.to(torch.float32)
        first = vae.post_quant_conv if vae.post_quant_conv is not None else vae.decoder
        first.register_forward_pre_hook(lambda _module, args: (args[0].to(torch.float32), *args[1:]))
    return Row(protocols={"vae_upcast": {
        "mode": cfg.vae_upcast, "decoder_dtype": str(next(vae.decoder.parameters()).dtype).removeprefix("torch."),
        "note": "force_upcast switched off: the pipeline no longer recasts the VAE each image"}})
