"""Architecture of the bundled reference model: Stable Diffusion's family at laptop scale.

Sizes were chosen by timing on a 2-core CPU: 16 images at 25 steps with CFG must take at most 10 s.
"""
from __future__ import annotations

from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from workbench.reference.tokenizer import MAX_LENGTH
from workbench.world.render import IMAGE_SIZE

LATENT_CHANNELS = 4
LATENT_SIZE = IMAGE_SIZE // 4
TEXT_WIDTH = 128
# Stable Diffusion 1.x's noise schedule (scaled linear, 1000 steps, epsilon prediction).
NOISE_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(32, 64, 64),
                layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=16, sample_size=IMAGE_SIZE)


def unet_config() -> dict:
    return dict(sample_size=LATENT_SIZE, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
                layers_per_block=1, block_out_channels=(32, 96, 160),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=TEXT_WIDTH, attention_head_dim=8, norm_num_groups=16)


def clip_config(vocab_size: int) -> CLIPConfig:
    text = CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
                          num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
                          projection_dim=128, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                          pad_token_id=vocab_size - 1)
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=4, hidden_size=192, intermediate_size=768,
                              num_hidden_layers=6, num_attention_heads=6, projection_dim=128)
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=128)


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(**vae_config())


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(**unet_config())


def build_clip(vocab_size: int) -> CLIPModel:
    return CLIPModel(clip_config(vocab_size))


def training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**{k: v for k, v in NOISE_SCHEDULE.items() if k != "set_alpha_to_one"})


def inference_scheduler() -> PNDMScheduler:
    """The scheduler the pipeline ships with, as SD1.x's folders do; the scheduler knob swaps it."""
    return PNDMScheduler(skip_prk_steps=True, **{k: v for k, v in NOISE_SCHEDULE.items()
                                                 if k not in ("prediction_type", "clip_sample")})
