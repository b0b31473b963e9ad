"""A tiny VAE decoder distilled from the model's own, as a cached artifact: TAESD's architecture (Bohan, "Tiny
AutoEncoder for Stable Diffusion", 2023; diffusers' `AutoencoderTiny`) trained offline for any user's VAE.

    tiny, report = distilled_decoder(pipe, prompts, "world-v1@ab12", device)   # -> AutoencoderTiny, build report

Data: the model's own generations (the cached `teacher-samples` latents the pruning recovery uses too), each also
flipped left-right and with a little Gaussian noise added, decoded by the full VAE: the tiny decoder learns the
full decoder's map on the latents sampling produces (and nearby ones: fewer steps, early-stopped estimates). It
decodes *scaled* latents (its `scaling_factor` is 1, TAESD's convention), so pipelines call it unchanged. A tenth
of the generations is held out: the PSNR of the tiny decoder's images to the full decoder's on them is recorded
with the build cost. Width follows the VAE (an eighth of its widest decoder level: 64 for SD's, TAESD's width),
blocks TAESD's (3 per level, 1 at full resolution).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.compress import build, cache

TRAIN = {"steps": 3000, "batch_size": 16, "lr": 2e-3, "noise": 0.1, "held_out": 0.1, "seed": 0}


SHAPES = ("tiny", "tiny-narrow")


def tiny_config(vae, shape: str = "tiny") -> dict:
    """AutoencoderTiny config for `vae`: as many upsamplings as its decoder. `tiny`: TAESD's blocks (3 a stage, 1
    last), width an eighth of its widest level, at least 16. `tiny-narrow`: one block a stage, width an eighth, at
    least 8: for VAEs smaller than SD's, where per-layer overheads outweigh FLOPs (docs/skipping.md)."""
    levels = len(vae.config.block_out_channels)
    if shape not in SHAPES:
        raise ValueError(f"tiny decoder shape {shape!r}: one of {', '.join(SHAPES)}")
    narrow = shape == "tiny-narrow"
    width = max(8 if narrow else 16, vae.config.block_out_channels[-1] // 8)
    blocks = (1,) * levels if narrow else (3,) * (levels - 1) + (1,)
    return dict(latent_channels=vae.config.latent_channels, decoder_block_out_channels=(width,) * levels,
                num_decoder_blocks=blocks, encoder_block_out_channels=(width,) * levels,
                num_encoder_blocks=(1,) + (3,) * (levels - 1), upsampling_scaling_factor=2, scaling_factor=1.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of images in [-1, 1] (as both decoders return them), computed on [0, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


@torch.no_grad()
def _decode_full(vae, latents: torch.Tensor, device, batch: int = 16) -> torch.Tensor:
    out = [vae.decode(z.to(device, vae.dtype) / vae.config.scaling_factor).sample.float().cpu()
           for z in latents.split(batch)]
    return torch.cat(out)


def distilled_decoder(pipe, prompts: list[str], prompt_set_id: str, device: torch.device, progress: bool = True,
                      shape: str = "tiny"):
    """(AutoencoderTiny of `shape` (SHAPES) with the distilled decoder, report with key, folder, build cost and
    held-out PSNR)."""
    from diffusers import AutoencoderTiny  # heavy: diffusers

    pipe.to(device)  # the teacher generates and the full VAE decodes on the trial's device (precision places it later)
    samples, data = build.teacher_set(pipe, build.TEACHER, prompts, prompt_set_id, device, progress)
    config = tiny_config(pipe.vae, shape)
    inputs = {"vae": cache.state_fingerprint(pipe.vae), "samples": data["data"], "config": config, **TRAIN}

    def make(folder: Path) -> dict:
        g = torch.Generator().manual_seed(TRAIN["seed"])
        latents = samples.latents[torch.randperm(len(samples.latents), generator=g)]
        n_held = max(1, math.ceil(TRAIN["held_out"] * len(latents)))
        held, train = latents[:n_held], latents[n_held:]
        train = torch.cat([train, train.flip(-1), train + TRAIN["noise"] * torch.randn(train.shape, generator=g)])
        vae = pipe.vae.to(device)
        t0 = time.time()
        targets, held_targets = _decode_full(vae, train, device), _decode_full(vae, held, device)
        targets_s = time.time() - t0
        torch.manual_seed(TRAIN["seed"])
        tiny = AutoencoderTiny(**config).to(device)
        opt = torch.optim.Adam(tiny.decoder.parameters(), lr=TRAIN["lr"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=TRAIN["lr"], total_steps=TRAIN["steps"])
        t1, losses = time.time(), []
        for _ in tqdm(range(TRAIN["steps"]), desc="tiny VAE decoder", disable=not progress, leave=False):
            idx = torch.randint(len(train), (TRAIN["batch_size"],), generator=g)
            out = tiny.decoder(train[idx].to(device))
            target = targets[idx].to(device)
            loss = F.l1_loss(out, target) + F.mse_loss(out, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss))
        train_s = time.time() - t1
        tiny.eval()
        with torch.no_grad():
            held_psnr = psnr(torch.cat([tiny.decoder(z.to(device)).float().cpu() for z in held.split(16)]),
                             held_targets)
        tiny.save_pretrained(folder)
        return {"cost_s": {"targets_s": targets_s, "train_s": train_s},
                "held_out": {"images": n_held, "psnr_db": float(held_psnr.mean()),
                             "psnr_db_se": float(held_psnr.std() / math.sqrt(n_held)) if n_held > 1 else None},
                "loss_first_last": [float(sum(losses[:50]) / 50), float(sum(losses[-50:]) / 50)],
                "train_pairs": len(train), "device": str(device)}

    art = cache.cached("tiny-vae", inputs, make)
    tiny = AutoencoderTiny.from_pretrained(art.folder)
    report = {"key": art.key, "folder": str(art.folder), "built": art.built, "data": data["data"],
              "samples_s": data["samples_s"], **{k: art.meta[k] for k in ("cost_s", "held_out", "train_pairs")}}
    return tiny, report
