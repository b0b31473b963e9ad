"""Knowledge distillation of a compressed student toward its uncompressed teacher, on data-free teacher samples.

    samples = teacher_samples(pipe, prompts, n=128)        # the teacher's own generations (latents + embeddings)
    batches = noised_batches(samples, pipe.scheduler.config, n_batches=4, batch_size=32, seed=1)
    report = distill(student, teacher, samples, pipe.scheduler.config, DistillConfig(steps=500))

Losses follow BK-SDM (Kim et al., 2023): the task loss (epsilon MSE), output-level KD (MSE between the student's
and the teacher's noise predictions) and feature-level KD (MSE between the outputs of same-named blocks), the
last only where the student's block output has the teacher's shape. Nothing here is specific to pruning: any
student with the teacher's call signature (a quantised or exported UNet) distils the same way.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from workbench.prompts import prompts_for

FEATURE_BLOCKS = ("down_blocks", "mid_block", "up_blocks")  # BK-SDM's feature KD points: every stage's output


@dataclass(frozen=True)
class DistillConfig:
    """Recovery settings (every field is part of the artifact key)."""
    steps: int = 500              # optimiser steps
    batch_size: int = 32          # noised samples per step
    lr: float = 5e-4              # AdamW peak learning rate: 5 % linear warm-up, then cosine decay to 10 %
    task_weight: float = 1.0      # epsilon-prediction MSE (BK-SDM lambda_task)
    out_weight: float = 1.0       # output KD MSE (BK-SDM lambda_OutKD)
    feat_weight: float = 1.0      # feature KD MSE, summed over matching blocks (BK-SDM lambda_FeatKD)
    uncond_prob: float = 0.1      # fraction of samples with the empty prompt, so guidance keeps working
    seed: int = 0                 # noise, timesteps and batch order

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Samples:
    """Clean latents x0 (in the UNet's scaled latent space) with their prompt embeddings."""
    latents: torch.Tensor         # [N, C, h, w]
    embeds: torch.Tensor          # [N, L, D]
    uncond: torch.Tensor          # [1, L, D], the empty prompt's embedding

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file
        save_file({"latents": self.latents, "embeds": self.embeds, "uncond": self.uncond}, str(path))

    @classmethod
    def load(cls, path: Path) -> "Samples":
        from safetensors.torch import load_file
        return cls(**load_file(str(path)))


@torch.no_grad()
def teacher_samples(pipe, prompts: list[str], n: int, steps: int = 20, guidance: float = 7.5, seed: int = 0,
                    batch_size: int = 16, device: torch.device | None = None, progress: bool = True) -> Samples:
    """The teacher pipeline's own generations for `prompts` (cycled; seeds seed..seed+n-1), kept as latents.

    Keeping the final latents skips the VAE decode-encode round trip; folder data goes through the VAE
    (`folder_samples`)."""
    device = device or pipe.device
    latents, embeds = [], []
    for start in tqdm(range(0, n, batch_size), desc="teacher samples", disable=not progress, leave=False):
        idx = list(range(start, min(start + batch_size, n)))
        batch_prompts = prompts_for(prompts, idx)
        gens = [torch.Generator("cpu").manual_seed(seed + i) for i in idx]
        out = pipe(batch_prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                   output_type="latent").images
        latents.append(out.float().cpu())
        embeds.append(_encode(pipe, batch_prompts, device))
    return Samples(torch.cat(latents), torch.cat(embeds), _encode(pipe, [""], device))


@torch.no_grad()
def folder_samples(pipe, folder: str | Path, device: torch.device | None = None) -> Samples:
    """Images of a folder with a caption file beside each (`x.png` + `x.txt`), VAE-encoded to scaled latents."""
    import numpy as np
    from PIL import Image

    device = device or pipe.device
    size = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
    files = [p for p in sorted(Path(folder).iterdir())
             if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") and p.with_suffix(".txt").is_file()]
    latents, embeds = [], []
    for start in range(0, len(files), 16):
        chunk = files[start:start + 16]
        pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((size, size))))
                              for f in chunk]).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device, pipe.vae.dtype)
        z = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        latents.append(z.float().cpu())
        embeds.append(_encode(pipe, [f.with_suffix(".txt").read_text().strip() for f in chunk], device))
    return Samples(torch.cat(latents), torch.cat(embeds), _encode(pipe, [""], device))


def count_folder_samples(folder: str | Path) -> int:
    """How many image + caption pairs a recovery folder holds."""
    return sum(1 for p in Path(folder).iterdir()
               if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") and p.with_suffix(".txt").is_file())


def _encode(pipe, prompts: list[str], device) -> torch.Tensor:
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(device)
    return pipe.text_encoder(ids)[0].float().cpu()


def noised_batches(samples: Samples, scheduler_config, n_batches: int, batch_size: int, seed: int = 0,
                   uncond_prob: float = 0.0, device: torch.device | str = "cpu", noise_schedule=None) -> list[dict]:
    """Clean latents re-noised at uniform random timesteps (the DDPM forward process of the model's schedule).

    `noise_schedule` (a DDPMScheduler of `scheduler_config`) saves re-building it when called once per step."""
    from diffusers import DDPMScheduler

    noise_schedule = noise_schedule or DDPMScheduler.from_config(scheduler_config)
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        idx = torch.randint(0, len(samples.latents), (batch_size,), generator=gen)
        x0 = samples.latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (batch_size,), generator=gen)
        embeds = samples.embeds[idx].clone()
        drop = torch.rand(batch_size, generator=gen) < uncond_prob
        embeds[drop] = samples.uncond[0]
        batches.append({"sample": noise_schedule.add_noise(x0, noise, t).to(device), "timestep": t.to(device),
                        "encoder_hidden_states": embeds.to(device), "noise": noise.to(device)})
    return batches


class _Features:
    """Outputs of the named blocks of a model, captured by forward hooks."""

    def __init__(self, model: nn.Module, names: list[str]):
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [model.get_submodule(n).register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(module, args, output):
            self.out[name] = output[0] if isinstance(output, tuple) else output
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def _block_names(model: nn.Module) -> list[str]:
    names = []
    for top in FEATURE_BLOCKS:
        module = getattr(model, top, None)
        if isinstance(module, nn.ModuleList):
            names += [f"{top}.{i}" for i in range(len(module))]
        elif module is not None:
            names.append(top)
    return names


def _call(model, batch):
    out = model(batch["sample"], batch["timestep"], batch["encoder_hidden_states"])
    return out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out


def matching_features(student: nn.Module, teacher: nn.Module, batch: dict) -> list[str]:
    """Block names present in both models whose outputs have equal shapes on `batch` (BK-SDM's feature KD)."""
    names = [n for n in _block_names(teacher) if n in set(_block_names(student))]
    fs, ft = _Features(student, names), _Features(teacher, names)
    with torch.no_grad():
        _call(student, batch), _call(teacher, batch)
    fs.remove(), ft.remove()
    return [n for n in names if n in fs.out and n in ft.out and fs.out[n].shape == ft.out[n].shape]


@torch.no_grad()
def output_mse(student, teacher, batches: list[dict]) -> float:
    """Mean output-KD loss (MSE of the noise predictions) over fixed batches: the number recovery lowers."""
    return float(sum(nn.functional.mse_loss(_call(student, b), _call(teacher, b)) for b in batches) / len(batches))


def distill(student: nn.Module, teacher: nn.Module, samples: Samples, scheduler_config, cfg: DistillConfig,
            device: torch.device | str = "cpu", progress: bool = True, eval_batches: list[dict] | None = None) -> dict:
    """Train `student` in place toward `teacher` (frozen) for cfg.steps; return losses before/after and per step."""
    device = torch.device(device)
    student.to(device).train()
    teacher.to(device).eval().requires_grad_(False)
    eval_batches = eval_batches or noised_batches(samples, scheduler_config, 4, cfg.batch_size, seed=cfg.seed + 10_000,
                                                  uncond_prob=cfg.uncond_prob, device=device)
    before = output_mse(student.eval(), teacher, eval_batches)
    student.train()
    features = matching_features(student, teacher, eval_batches[0]) if cfg.feat_weight else []
    fs, ft = _Features(student, features), _Features(teacher, features)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    warm = max(1, cfg.steps // 20)  # linear warm-up over 5 %: a near-exact student is not knocked off at step 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / max(cfg.steps, 1), 1.0)))))
    from diffusers import DDPMScheduler

    noise_schedule = DDPMScheduler.from_config(scheduler_config)
    history = []  # output-KD loss per step, kept on the device: no host sync per step (GPU steps are launch-bound)
    bar = tqdm(range(cfg.steps), desc="recovery (distillation)", disable=not progress, leave=False)
    t0 = time.time()
    for step in bar:
        batch = noised_batches(samples, scheduler_config, 1, cfg.batch_size, seed=cfg.seed * 1_000_003 + step,
                               uncond_prob=cfg.uncond_prob, device=device, noise_schedule=noise_schedule)[0]
        with torch.no_grad():
            target = _call(teacher, batch)
        pred = _call(student, batch)
        loss_out = nn.functional.mse_loss(pred, target)
        loss_task = nn.functional.mse_loss(pred, batch["noise"])
        loss_feat = sum((nn.functional.mse_loss(fs.out[n], ft.out[n]) for n in features), torch.zeros((), device=device))
        loss = cfg.task_weight * loss_task + cfg.out_weight * loss_out + cfg.feat_weight * loss_feat
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append(loss_out.detach())
        if step % 20 == 0:
            bar.set_postfix(kd=f"{history[-1].item():.4f}")
    history = torch.stack(history).tolist() if history else []  # waits for the last step
    step_s = (time.time() - t0) / max(cfg.steps, 1)
    fs.remove(), ft.remove()
    student.eval()
    after = output_mse(student, teacher, eval_batches)
    return {"kd_mse_before": before, "kd_mse_after": after, "feature_blocks": features, "steps": cfg.steps,
            "batch_size": cfg.batch_size, "step_s": step_s,
            "kd_mse_first20": sum(history[:20]) / max(len(history[:20]), 1),
            "kd_mse_last20": sum(history[-20:]) / max(len(history[-20:]), 1),
            "kd_mse_tenths": [sum(w) / len(w) for w in (history[i * len(history) // 10:(i + 1) * len(history) // 10]
                                                         for i in range(10)) if w]}
