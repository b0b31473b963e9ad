"""Offline architecture presets: Stable Diffusion 1.5, 2.1 and SDXL base 1.0 from their published configs with
random weights, and a tiny SDXL for CPU tests.

    pipe = preset_pipeline("sdxl-random", device="cuda")   # built where it runs: seconds on a GPU, no download

Latency and memory are real (random weights time like trained ones); quality numbers measure nothing, so every
preset is in `workbench.models.MEANINGLESS` and its rows say so. Each preset's UNet, VAE, text encoder(s) and
scheduler take the values of the config.json files of the diffusers folder named in `source` (the tiny SDXL follows
diffusers' own SDXL pipeline tests). No CLIP vocabulary exists offline: the tokenizer is our small CLIP BPE
(`workbench.reference.tokenizer`) padded to CLIP's 77 tokens, and the text encoders keep CLIP's 49,408-entry
embedding table, which holds every id it produces.
"""
from __future__ import annotations

from dataclasses import dataclass

from workbench import paths

CLIP_VOCAB = 49408      # CLIP BPE's vocabulary: the embedding rows of every published SD text encoder
CLIP_TOKENS = 77        # CLIP's context: the prompt length of every published SD pipeline

# Text encoders (transformers CLIPTextConfig): OpenAI CLIP ViT-L/14, OpenCLIP ViT-H/14 (less its last layer, which
# SD 2 drops), OpenCLIP ViT-bigG/14 (SDXL's second encoder, CLIPTextModelWithProjection)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu", projection_dim=768, vocab_size=CLIP_VOCAB)
OPEN_CLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                   hidden_act="gelu", projection_dim=512, vocab_size=CLIP_VOCAB)
OPEN_CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                       hidden_act="gelu", projection_dim=1280, vocab_size=CLIP_VOCAB)

SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, norm_num_groups=32)
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   steps_offset=1)
SDXL_SCHEDULER = ("EulerDiscreteScheduler", dict(SD_SCHEDULE, timestep_spacing="leading", interpolation_type="linear",
                                                 use_karras_sigmas=False))


@dataclass(frozen=True)
class Preset:
    """One architecture: `family` 'sd' (StableDiffusionPipeline) or 'sdxl' (StableDiffusionXLPipeline), the configs
    of its components, and the published folder they come from. SDXL's second text encoder has a projection."""
    family: str
    source: str
    unet: dict
    vae: dict
    text_encoders: tuple[dict, ...]
    scheduler: tuple[str, dict]


PRESETS = {
    "sd15-random": Preset(
        "sd", "runwayml/stable-diffusion-v1-5 (512x512, epsilon)",
        unet=dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                  down_block_types=SD_DOWN, up_block_types=SD_UP, cross_attention_dim=768, attention_head_dim=8),
        vae=dict(SD_VAE, sample_size=512),
        text_encoders=(CLIP_L,),
        scheduler=("PNDMScheduler", dict(SD_SCHEDULE, skip_prk_steps=True, set_alpha_to_one=False, clip_sample=False))),
    "sd21-random": Preset(
        "sd", "stabilityai/stable-diffusion-2-1 (768x768, v-prediction; not the 512x512 -base model)",
        unet=dict(sample_size=96, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                  down_block_types=SD_DOWN, up_block_types=SD_UP, cross_attention_dim=1024,
                  attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, upcast_attention=True),
        vae=dict(SD_VAE, sample_size=768),
        text_encoders=(OPEN_CLIP_H,),
        scheduler=("DDIMScheduler", dict(SD_SCHEDULE, prediction_type="v_prediction", set_alpha_to_one=False,
                                         clip_sample=False))),
    "sdxl-random": Preset(
        "sdxl", "stabilityai/stable-diffusion-xl-base-1.0 (1024x1024, epsilon)",
        unet=dict(sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
                  cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
                  projection_class_embeddings_input_dim=2816),  # 6 size/crop ids x 256 + the 1280-d pooled text
        vae=dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
        text_encoders=(CLIP_L, OPEN_CLIP_BIG_G),
        scheduler=SDXL_SCHEDULER),
    "tiny-sdxl": Preset(
        "sdxl", "diffusers' SDXL pipeline tests (get_dummy_components), 32x32 like tiny-random",
        unet=dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
                  attention_head_dim=(2, 4), use_linear_projection=True, cross_attention_dim=64,
                  addition_embed_type="text_time", addition_time_embed_dim=8,
                  projection_class_embeddings_input_dim=80, norm_num_groups=16),  # 6 x 8 + the 32-d pooled text
        vae=dict(block_out_channels=(16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
                 up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=4, norm_num_groups=16,
                 sample_size=32, scaling_factor=0.13025),
        text_encoders=(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            hidden_act="gelu", projection_dim=32),) * 2,
        scheduler=SDXL_SCHEDULER),
}


def preset_pipeline(name: str, device=None, seed: int = 0):
    """A fresh fp32 pipeline of the preset with random weights, built directly on `device` (default the CPU).

    Modules are constructed under a `torch.device` context, so their weights are allocated and initialised where
    they will run (no CPU detour); `device="meta"` allocates nothing (parameter counts of the full architectures)."""
    import diffusers  # heavy
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from workbench.reference.tokenizer import write_tokenizer  # heavy: torch (the world's renderer)

    preset = PRESETS[name]
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(paths.cache() / f"clip-tokenizer-{CLIP_TOKENS}",
                                                              max_length=CLIP_TOKENS))
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, max_position_embeddings=CLIP_TOKENS)
    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        encoders = [(CLIPTextModelWithProjection if i else CLIPTextModel)(
            CLIPTextConfig(**{"vocab_size": len(tokenizer), **config, **ids}))
            for i, config in enumerate(preset.text_encoders)]
        unet = diffusers.UNet2DConditionModel(**preset.unet)
        vae = diffusers.AutoencoderKL(**preset.vae)
    scheduler_class, scheduler_config = preset.scheduler
    scheduler = getattr(diffusers, scheduler_class).from_config(scheduler_config)  # as the published file: keys a
    # class does not take (PNDM's clip_sample) are ignored, as loading that folder would
    if preset.family == "sdxl":
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1], tokenizer=tokenizer, tokenizer_2=tokenizer,
            unet=unet, scheduler=scheduler, add_watermarker=False)
    else:
        pipe = diffusers.StableDiffusionPipeline(
            vae=vae, text_encoder=encoders[0], tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
