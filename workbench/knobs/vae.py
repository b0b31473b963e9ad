"""VAE knob: decode with the model's full VAE, a tiny decoder distilled from it (`tiny`: TAESD's architecture
trained by the workbench on the model's own generations, a cached artifact like pruned models), `tiny-narrow`
(one block a stage, width an eighth of the VAE's, at least 8: for VAEs smaller than SD's), or an
`AutoencoderTiny` from a folder or hub id (e.g. madebyollin/taesd for SD 1.x/2.x, madebyollin/taesdxl for SDXL).
Thin: `workbench.compress.tiny_vae` builds the distilled decoder."""
from __future__ import annotations

import json
from pathlib import Path

from workbench.compress.specs import named_components
from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row
from workbench.models import HUB_ID
from workbench.prompts import load_prompts, prompt_set_version

FIELDS = (Field("vae", "full", "full | tiny (TAESD-shaped decoder distilled from the model's VAE, cached) | "
                "tiny-narrow (one block a stage, for small VAEs) | folder or hub id of an AutoencoderTiny",
                choices=("full", "tiny", "tiny-narrow"), open=True),)
DISTILLED = ("tiny", "tiny-narrow")


def check(cfg, where: str = "config") -> None:
    if cfg.vae == "full":
        return
    if cfg.backend != "torch" and "vae_decoder" in named_components(cfg.quant_components):
        raise ConfigError(f"{where}.quant_components: the tiny decoder stays in torch under backend {cfg.backend} "
                          "(nothing to quantise: it is ~1 % of the full decoder); drop vae_decoder or set vae: full")
    if cfg.vae in DISTILLED:
        return
    path = Path(cfg.vae).expanduser()
    if path.is_dir():
        config = path / "config.json"
        kind = json.loads(config.read_text()).get("_class_name") if config.is_file() else None
        if kind != "AutoencoderTiny":
            raise ConfigError(f"{where}.vae: folder {cfg.vae!r} holds no AutoencoderTiny (config.json _class_name is "
                              f"{kind!r}); use full, tiny, or an AutoencoderTiny folder such as a TAESD download")
    elif not HUB_ID.match(cfg.vae) or cfg.vae.startswith((".", "/", "~")):
        raise ConfigError(f"{where}.vae: {cfg.vae!r} is neither full, tiny, an existing folder nor a hub id "
                          "(org/name, e.g. madebyollin/taesd)")


def apply(pipe, cfg, device) -> Row | None:
    """Swap the pipeline's VAE (before precision: the tiny one is cast and placed with the rest)."""
    if cfg.vae == "full":
        return None
    from diffusers import AutoencoderTiny  # heavy: diffusers

    full = sum(p.numel() for p in pipe.vae.decoder.parameters())
    if cfg.vae not in DISTILLED:
        pipe.vae = AutoencoderTiny.from_pretrained(cfg.vae)
        return Row({"vae_decoder_params_m": sum(p.numel() for p in pipe.vae.decoder.parameters()) / 1e6},
                   {"vae": {"source": cfg.vae, "full_decoder_params_m": full / 1e6}})
    from workbench.compress.tiny_vae import distilled_decoder  # heavy: torch, diffusers

    pipe.vae, report = distilled_decoder(pipe, load_prompts(cfg.prompt_set), prompt_set_version(cfg.prompt_set),
                                         device, shape=cfg.vae)
    held = report["held_out"]
    return Row({"vae_decoder_params_m": sum(p.numel() for p in pipe.vae.decoder.parameters()) / 1e6,
                "tiny_vae_s": sum(report["cost_s"].values()) + report["samples_s"],
                "tiny_vae_psnr": held["psnr_db"]},
               {"vae": {"source": f"{cfg.vae}: distilled from the model's VAE decoder (workbench.compress.tiny_vae)",
                        "artifact": report["key"], "folder": report["folder"], "loaded_from_cache": not report["built"],
                        "full_decoder_params_m": full / 1e6, "data": report["data"],
                        "train_pairs": report["train_pairs"], "cost_s": report["cost_s"],
                        "tiny_vae_psnr": f"PSNR of the tiny decoder's images to the full decoder's on {held['images']} "
                                         f"held-out generations of the model (± {held['psnr_db_se']})"}},
               {"tiny_vae": report["folder"]})
