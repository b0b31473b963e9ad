"""Calibration data captured from real pipeline runs: what each component sees when the pipeline generates.

    calib = calibration(pipe, prompts, "world-v1@ab12")   # cached artifact, built once per model and prompt set

One run of the pipeline (DPM++ 2M, 20 steps, CFG 7.5: the reference model's recommended sampling) over the
prompt set records, by forward pre-hooks, the UNet's inputs at every step (so every timestep is represented), the
text encoder's token ids and the VAE decoder's latents; the generations themselves (final latents with their
prompt embeddings) are the data-free distillation set for QAT and the denoising-loss data of layer importance.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.compress import cache
from workbench.compress.distill import Samples, _encode
from workbench.prompts import prompts_for

SETTINGS = {"generations": 128, "captured": 16, "steps": 20, "guidance": 7.5, "batch_size": 8, "seed": 0,
            "sampler": "DPMSolverMultistepScheduler"}


@dataclass
class Calibration:
    unet: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]   # (sample, timestep[B], embeddings) per UNet call
    text_encoder: list[tuple[torch.Tensor]]                         # (input_ids,) per prompt batch
    vae_decoder: list[tuple[torch.Tensor]]                          # (z after post_quant_conv,) per decode
    samples: Samples                                                # the generations: x0 latents + embeddings
    key: str = ""
    build_s: float = 0.0

    def inputs(self, component: str) -> list[tuple]:
        return getattr(self, component)


def calibration(pipe, prompts: list[str], prompt_set_id: str, progress: bool = False) -> Calibration:
    """The cached calibration capture of `pipe` (any knob already applied to it is part of the key)."""
    inputs = {"unet": cache.state_fingerprint(pipe.unet), "text_encoder": cache.state_fingerprint(pipe.text_encoder),
              "vae": cache.state_fingerprint(pipe.vae), "prompt_set": prompt_set_id, **SETTINGS}

    def build(folder: Path) -> dict:
        t0 = time.time()
        tensors = capture(pipe, prompts, progress)
        from safetensors.torch import save_file
        save_file(tensors, str(folder / "calibration.safetensors"))
        return {"cost_s": {"calibration_s": time.time() - t0}}

    art = cache.cached("calibration", inputs, build)
    from safetensors.torch import load_file
    t = load_file(str(art.folder / "calibration.safetensors"))
    n_unet = sum(1 for k in t if k.startswith("unet.sample."))
    n_text = sum(1 for k in t if k.startswith("text.ids."))
    n_dec = sum(1 for k in t if k.startswith("decoder.z."))
    return Calibration(
        unet=[(t[f"unet.sample.{i}"], t[f"unet.timestep.{i}"], t[f"unet.embeds.{i}"]) for i in range(n_unet)],
        text_encoder=[(t[f"text.ids.{i}"],) for i in range(n_text)],
        vae_decoder=[(t[f"decoder.z.{i}"],) for i in range(n_dec)],
        samples=Samples(t["samples.latents"], t["samples.embeds"], t["samples.uncond"]),
        key=art.key, build_s=art.meta["cost_s"]["calibration_s"])


@torch.no_grad()
def capture(pipe, prompts: list[str], progress: bool = False) -> dict[str, torch.Tensor]:
    """Run the pipeline over the prompts and return every recorded input as a flat dict of tensors."""
    from diffusers import DPMSolverMultistepScheduler
    from tqdm.auto import tqdm

    s = SETTINGS
    recording = {"on": False}
    out: dict[str, torch.Tensor] = {}
    counts = {"unet": 0, "text": 0, "decoder": 0}

    def unet_hook(module, args, kwargs):
        if recording["on"]:
            sample = args[0]
            timestep = args[1] if len(args) > 1 else kwargs["timestep"]
            embeds = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]
            i = counts["unet"]
            out[f"unet.sample.{i}"] = sample.detach().float().cpu().clone()
            out[f"unet.timestep.{i}"] = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(
                sample.shape[0]).cpu().clone()
            out[f"unet.embeds.{i}"] = embeds.detach().float().cpu().clone()
            counts["unet"] += 1

    def text_hook(module, args, kwargs):
        if recording["on"]:
            out[f"text.ids.{counts['text']}"] = (args[0] if args else kwargs["input_ids"]).detach().cpu().clone()
            counts["text"] += 1

    def decoder_hook(module, args, kwargs):
        if recording["on"]:
            out[f"decoder.z.{counts['decoder']}"] = args[0].detach().float().cpu().clone()
            counts["decoder"] += 1

    handles = [pipe.unet.register_forward_pre_hook(unet_hook, with_kwargs=True),
               pipe.text_encoder.register_forward_pre_hook(text_hook, with_kwargs=True),
               pipe.vae.decoder.register_forward_pre_hook(decoder_hook, with_kwargs=True)]
    original = pipe.scheduler
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config)
    latents, embeds = [], []
    try:
        for start in tqdm(range(0, s["generations"], s["batch_size"]), desc="calibration", disable=not progress,
                          leave=False):
            idx = list(range(start, min(start + s["batch_size"], s["generations"])))
            batch = prompts_for(prompts, idx)
            recording["on"] = start < s["captured"]
            gens = [torch.Generator("cpu").manual_seed(s["seed"] + i) for i in idx]
            z = pipe(batch, num_inference_steps=s["steps"], guidance_scale=s["guidance"], generator=gens,
                     output_type="latent").images
            if recording["on"]:  # the decoder's input as the pipeline would feed it
                pipe.vae.decode(z / pipe.vae.config.scaling_factor, return_dict=False)
            recording["on"] = False
            latents.append(z.float().cpu())
            embeds.append(_encode(pipe, batch, pipe.device))
    finally:
        pipe.scheduler = original
        for h in handles:
            h.remove()
    out["samples.latents"] = torch.cat(latents).contiguous()
    out["samples.embeds"] = torch.cat(embeds).contiguous()
    out["samples.uncond"] = _encode(pipe, [""], pipe.device).contiguous()
    return out
