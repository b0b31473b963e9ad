"""Model sources: the bundled reference model, a tiny random pipeline, a local diffusers folder or a hub id."""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from workbench.errors import ConfigError

ASSETS = Path(__file__).resolve().parent / "assets"
REFERENCE_SD = ASSETS / "reference" / "sd"
REFERENCE_CLIP = ASSETS / "reference" / "clip"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_source(model: str, field: str = "model") -> str:
    """Classify a model source ('reference' | 'tiny-random' | 'folder' | 'hub') or raise one clear line."""
    if model in ("reference", "tiny-random"):
        return model
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ConfigError(f"{field}: folder {model!r} has no model_index.json; point it at a diffusers "
                              "StableDiffusionPipeline folder (save_pretrained output)")
        return "folder"
    if HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ConfigError(f"{field}: {model!r} is a hub id but HF_HUB_OFFLINE=1; download it while online "
                              "and pass the local folder")
        return "hub"
    raise ConfigError(f"{field}: folder {model!r} does not exist; use 'reference', 'tiny-random', a diffusers "
                      "pipeline folder or a hub id (org/name)")


def quality_is_meaningful(model: str) -> bool:
    """Random weights give numbers that measure nothing about image quality."""
    return model != "tiny-random"


def load_pipeline(model: str):
    """A fresh StableDiffusionPipeline (fp32, CPU) for the source; every trial builds its own."""
    from diffusers import StableDiffusionPipeline

    kind = check_model_source(model)
    if kind == "tiny-random":
        return tiny_random_pipeline()
    source = str(REFERENCE_SD) if kind == "reference" else model
    kwargs = {"safety_checker": None, "requires_safety_checker": False}
    if kind != "hub":
        kwargs["local_files_only"] = True
    pipe = StableDiffusionPipeline.from_pretrained(source, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_random_pipeline(seed: int = 0):
    """A Stable Diffusion pipeline built from configs with random weights: 32x32 images, for tests."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from workbench.reference.architecture import NOISE_SCHEDULE
    from workbench.reference.tokenizer import write_tokenizer

    torch.manual_seed(seed)
    folder = Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench")) / "tiny-tokenizer"
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(folder))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=len(tokenizer) - 2,
        eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=16)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
                        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=16, sample_size=32)
    scheduler = PNDMScheduler(skip_prk_steps=True, **{k: v for k, v in NOISE_SCHEDULE.items()
                                                      if k not in ("prediction_type", "clip_sample")})
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def native_resolution(pipe) -> int:
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
