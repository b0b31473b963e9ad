"""Train the bundled reference model from scratch: autoencoder, CLIP, then UNet.

Each stage trains for a wall-clock budget, checkpoints into a work folder and resumes from it, so training
can be spread over several time-limited commands (e.g. a GPU job queue that limits each job to 10 minutes):

    python -m workbench.reference.train --work .devwork --stage vae --minutes 2
    python -m workbench.reference.train --work .devwork --stage unet --minutes 8 --total-minutes 24

Losses follow the papers: the autoencoder is KL-regularised (Rombach et al., 2022) with L1 + L2
reconstruction; CLIP is contrastive (Radford et al., 2021) with every same-scene caption in the batch counted as
a positive; the UNet is DDPM epsilon prediction (Ho et al., 2020) with 10 % caption dropout for
classifier-free guidance (Ho & Salimans, 2022) and an EMA of its weights.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer

from workbench.measure.alignment import ZeroShotWorld, as_features, clip_pixels
from workbench.reference import architecture as arch
from workbench.reference.tokenizer import MAX_LENGTH, write_tokenizer
from workbench.world import render as world
from workbench.world.fmnist import load_split

SEED = 20261122


class WorldSampler:
    """Random batches of the captioned world, rendered on the training device."""

    def __init__(self, split: str, device: torch.device, data_dir: str | None, seed: int):
        images, labels = load_split(split, data_dir)
        self.images = torch.from_numpy(images.copy()).to(device)
        self.labels = torch.from_numpy(labels.astype(np.int64)).to(device)
        self.device = device
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.radix = [len(world.VOCAB[a]) for a in world.ATTRIBUTES]

    def reseed(self, stage: "Stage") -> None:
        """Continue a resumed stage with fresh batches: the stream is seeded by the stage's step count."""
        self.gen.manual_seed(SEED + stage.state["step"] + 1_000_003 * ("vae", "clip", "unet").index(stage.name))

    def _randint(self, high: int, n: int) -> torch.Tensor:
        return torch.randint(high, (n,), generator=self.gen, device=self.device)

    def batch(self, n: int):
        """-> images [n, 3, 64, 64] in [0, 1], attributes [n, 5], caption ids [n] (template-major)."""
        idx = self._randint(len(self.labels), n)
        attrs = torch.stack([self.labels[idx]] + [self._randint(r, n) for r in self.radix[1:]], 1)
        jitter = torch.randint(-world.JITTER, world.JITTER + 1, (n, 2), generator=self.gen, device=self.device)
        images = world.render_batch(self.images[idx], attrs[:, 1], attrs[:, 2], attrs[:, 3], attrs[:, 4], jitter)
        template = self._randint(len(world.TEMPLATES), n)
        return images, attrs, template * self.n_combos + self.combo_id(attrs)

    @property
    def n_combos(self) -> int:
        return int(np.prod(self.radix))

    def combo_id(self, attrs: torch.Tensor) -> torch.Tensor:
        cid = torch.zeros(len(attrs), dtype=torch.long, device=self.device)
        for a, r in enumerate(self.radix):
            cid = cid * r + attrs[:, a]
        return cid


def caption_tokens(tokenizer) -> torch.Tensor:
    """Token ids of every caption, template-major in the order of WorldSampler's caption ids."""
    captions = [c for t in range(len(world.TEMPLATES)) for c in world.all_captions(template=t)[0]]
    return tokenizer(captions, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                     return_tensors="pt").input_ids


def lr_at(progress: float, peak: float, warmup: float = 0.03) -> float:
    """Linear warm-up then cosine decay to 10 % of peak, over training progress in [0, 1]."""
    if progress < warmup:
        return peak * progress / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup)))))


class Stage:
    """One resumable training stage: a model, an optimiser and a wall-clock budget."""

    def __init__(self, name: str, work: Path, model: torch.nn.Module, lr: float, total_minutes: float,
                 weight_decay: float = 0.0, ema: float | None = None):
        self.name, self.dir, self.model, self.peak_lr = name, work / name, model, lr
        self.dir.mkdir(parents=True, exist_ok=True)
        self.total_s = total_minutes * 60
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
        self.ema = copy.deepcopy(model).eval().requires_grad_(False) if ema else None
        self.ema_decay = ema
        self.state = {"step": 0, "train_seconds": 0.0, "samples": 0, "log": []}
        if (self.dir / "state.json").exists():
            self.state = json.loads((self.dir / "state.json").read_text())
            model.load_state_dict(load_file(self.dir / "model.safetensors"))
            if self.ema is not None:
                self.ema.load_state_dict(load_file(self.dir / "ema.safetensors"))
            if (self.dir / "optimizer.pt").exists():
                self.opt.load_state_dict(torch.load(self.dir / "optimizer.pt", weights_only=True))
            print(f"[{name}] resumed at step {self.state['step']} ({self.state['train_seconds'] / 60:.1f} min trained)")

    def done(self) -> bool:
        return self.state["train_seconds"] >= self.total_s

    def run(self, minutes: float, loss_fn, batch_size: int, log_every: int = 200) -> None:
        deadline = time.time() + minutes * 60
        self.model.train()
        running, t_last = [], time.time()
        while time.time() < deadline and not self.done():
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.state["train_seconds"] / self.total_s, self.peak_lr)
            with torch.autocast(device_type=self._device_type(), dtype=torch.bfloat16,
                                enabled=self._device_type() == "cuda"):
                loss = loss_fn(self.model)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            if self.ema is not None:
                with torch.no_grad():
                    for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                        pe.lerp_(pm, 1 - self.ema_decay)
            running.append(loss.detach())
            self.state["step"] += 1
            self.state["samples"] += batch_size
            now = time.time()
            self.state["train_seconds"] += now - t_last
            t_last = now
            if self.state["step"] % log_every == 0:
                mean = torch.stack(running).mean().item()
                running = []
                self.state["log"].append([self.state["step"], round(self.state["train_seconds"], 1), mean])
                print(f"[{self.name}] step {self.state['step']} {self.state['train_seconds'] / 60:.2f} min "
                      f"loss {mean:.4f} lr {self.opt.param_groups[0]['lr']:.2e}", flush=True)
        self.save()

    def _device_type(self) -> str:
        return next(self.model.parameters()).device.type

    def save(self) -> None:
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, self.dir / "model.safetensors")
        if self.ema is not None:
            save_file({k: v.contiguous() for k, v in self.ema.state_dict().items()}, self.dir / "ema.safetensors")
        torch.save(self.opt.state_dict(), self.dir / "optimizer.pt")
        (self.dir / "state.json").write_text(json.dumps(self.state))

    @property
    def final(self) -> torch.nn.Module:
        return self.ema if self.ema is not None else self.model


def train_vae(work: Path, sampler: WorldSampler, minutes: float, total: float, device) -> None:
    vae = arch.build_vae().to(device)
    stage = Stage("vae", work, vae, lr=1e-3, total_minutes=total)
    sampler.reseed(stage)

    def loss_fn(model):
        images, _, _ = sampler.batch(128)
        x = images * 2 - 1
        posterior = model.encode(x).latent_dist
        recon = model.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / x[0].numel()
        return F.l1_loss(recon, x) + F.mse_loss(recon, x) + 1e-4 * kl

    stage.run(minutes, loss_fn, 128)


def load_vae(work: Path, device) -> torch.nn.Module:
    vae = arch.build_vae().to(device)
    vae.load_state_dict(load_file(work / "vae" / "model.safetensors"))
    return vae.eval().requires_grad_(False)


def train_clip(work: Path, sampler: WorldSampler, tokenizer, minutes: float, total: float, device,
               freeze_text: bool = False) -> None:
    """Contrastive CLIP training; with freeze_text, only the vision tower learns, against every caption.

    The second phase (frozen text, all 9,600 captions as the negatives) sharpens the fine garment classes once
    the text tower, which the UNet is conditioned on, is fixed.
    """
    clip = arch.build_clip(len(tokenizer)).to(device)
    stage = Stage("clip", work, clip, lr=5e-4, total_minutes=total, weight_decay=0.1)
    sampler.reseed(stage)
    tokens = caption_tokens(tokenizer).to(device)
    image_size = clip.config.vision_config.image_size
    if freeze_text:
        clip.text_model.requires_grad_(False)
        clip.text_projection.requires_grad_(False)
        with torch.no_grad():
            text = torch.cat([as_features(clip.get_text_features(input_ids=tokens[i:i + 1024])) for i in range(0, len(tokens), 1024)])
            text = F.normalize(text.float(), dim=-1)
        scene_of_caption = torch.arange(len(tokens), device=device) % sampler.n_combos

    def loss_fn(model):
        images, _, cid = sampler.batch(512)
        scene = cid % sampler.n_combos
        if freeze_text:
            feats = F.normalize(as_features(model.get_image_features(pixel_values=clip_pixels(images, image_size))).float(), dim=-1)
            logits = model.logit_scale.exp() * feats @ text.T
            positive = scene[:, None] == scene_of_caption[None, :]
            return (logits.logsumexp(1) - logits.masked_fill(~positive, -1e4).logsumexp(1)).mean()
        out = model(input_ids=tokens[cid], pixel_values=clip_pixels(images, image_size))
        positives = (scene[:, None] == scene[None, :]).float()
        target = positives / positives.sum(1, keepdim=True)
        logits = out.logits_per_image.float()
        return (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()) / 2

    stage.run(minutes, loss_fn, 512)


def load_clip(work: Path, tokenizer, device) -> torch.nn.Module:
    clip = arch.build_clip(len(tokenizer)).to(device)
    clip.load_state_dict(load_file(work / "clip" / "model.safetensors"))
    return clip.eval().requires_grad_(False)


def evaluate_clip(work: Path, tokenizer, device, data_dir: str | None, n: int = 2000) -> dict[str, float]:
    """Zero-shot accuracy of the CLIP on real test-split scenes (the FID reference set)."""
    clip = load_clip(work, tokenizer, device)
    scene = world.sample_scenes("test", n, seed=0, data_dir=data_dir)
    images = world.render(scene, "test", data_dir, device=device)
    acc = ZeroShotWorld(clip, tokenizer, device).accuracy(images, scene.captions())
    print(f"[clip] zero-shot on {n} real test scenes: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    (work / "clip" / "zero_shot.json").write_text(json.dumps({"n_images": n, **acc}))
    return acc


def measure_scaling_factor(vae, sampler: WorldSampler, n: int = 8192) -> float:
    """1 / std of the autoencoder's latents over training images, as Rombach et al. (2022) scale them."""
    with torch.no_grad():
        latents = torch.cat([vae.encode(sampler.batch(512)[0] * 2 - 1).latent_dist.sample() for _ in range(n // 512)])
    return float(1 / latents.float().std())


def train_unet(work: Path, sampler: WorldSampler, tokenizer, minutes: float, total: float, device) -> None:
    vae = load_vae(work, device)
    meta_path = work / "unet_meta.json"
    if not meta_path.exists():
        meta_path.write_text(json.dumps({"scaling_factor": measure_scaling_factor(vae, sampler)}))
    scaling = json.loads(meta_path.read_text())["scaling_factor"]
    print(f"[unet] latent scaling factor {scaling:.4f}")
    text_encoder = load_clip(work, tokenizer, device).text_model
    tokens = caption_tokens(tokenizer).to(device)
    empty = tokenizer([""], padding="max_length", max_length=MAX_LENGTH, return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        table = torch.cat([text_encoder(input_ids=tokens[i:i + 1024]).last_hidden_state
                           for i in range(0, len(tokens), 1024)])
        null = text_encoder(input_ids=empty).last_hidden_state
    unet = arch.build_unet().to(device)
    stage = Stage("unet", work, unet, lr=5e-4, total_minutes=total, ema=0.9995)
    sampler.reseed(stage)
    noise_sched = arch.training_scheduler()
    alphas = noise_sched.alphas_cumprod.to(device)
    batch = 512

    def loss_fn(model):
        images, _, cid = sampler.batch(batch)
        with torch.no_grad():
            latents = vae.encode(images * 2 - 1).latent_dist.sample() * scaling
        cond = table[cid]
        drop = torch.rand(batch, device=device) < 0.1
        cond = torch.where(drop[:, None, None], null.expand_as(cond), cond)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch,), device=device)
        noise = torch.randn_like(latents)
        a = alphas[t][:, None, None, None]
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        pred = model(noisy, t, encoder_hidden_states=cond).sample
        return F.mse_loss(pred.float(), noise)

    stage.run(minutes, loss_fn, batch)


def export(work: Path, out: Path, resumable: bool = False) -> None:
    """Copy the trained weights (EMA for the UNet) into `out` as files of at most 15 MB, with the logs.

    resumable also exports the UNet's raw weights, so training can resume elsewhere (without optimiser state).
    """
    out.mkdir(parents=True, exist_ok=True)
    parts = [("vae", "model", "vae"), ("clip", "model", "clip"), ("unet", "ema", "unet")]
    for name, file, prefix in parts + ([("unet", "model", "unetraw")] if resumable else []):
        path = work / name / f"{file}.safetensors"
        if not path.exists():
            continue
        state = load_file(path)
        shard, size, index = {}, 0, 0
        for key, value in state.items():
            if size + value.numel() * value.element_size() > 15e6 and shard:
                save_file(shard, out / f"{prefix}-{index}.safetensors")
                shard, size, index = {}, 0, index + 1
            shard[key] = value
            size += value.numel() * value.element_size()
        save_file(shard, out / f"{prefix}-{index}.safetensors")
    summary = {name: json.loads((work / name / "state.json").read_text()) for name in ("vae", "clip", "unet")
               if (work / name / "state.json").exists()}
    for extra in ("unet_meta.json", "clip/zero_shot.json"):
        if (work / extra).exists():
            summary[extra] = json.loads((work / extra).read_text())
    (out / "training.json").write_text(json.dumps(summary))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("results/reference-training"), help="checkpoint folder")
    p.add_argument("--stage", choices=["vae", "clip", "unet", "export"], required=True)
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this command's stage")
    p.add_argument("--total-minutes", type=float, help="the stage's whole budget over all commands (lr schedule)")
    p.add_argument("--fmnist-dir", help="folder of the Fashion-MNIST IDX files (default: bundled/Debian)")
    p.add_argument("--out", type=Path, help="with --stage export: where the weight shards go")
    p.add_argument("--resumable", action="store_true", help="export: include the UNet's raw weights")
    p.add_argument("--freeze-text", action="store_true", help="clip stage: train the vision tower only")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.manual_seed(SEED)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(args.work / "tokenizer"))
    total = args.total_minutes or args.minutes
    if args.stage == "export":
        export(args.work, args.out or args.work / "export", args.resumable)
        return
    sampler = WorldSampler("train", device, args.fmnist_dir, seed=SEED)
    if args.stage == "vae":
        train_vae(args.work, sampler, args.minutes, total, device)
    elif args.stage == "clip":
        train_clip(args.work, sampler, tokenizer, args.minutes, total, device, args.freeze_text)
        evaluate_clip(args.work, tokenizer, device, args.fmnist_dir)
    else:
        train_unet(args.work, sampler, tokenizer, args.minutes, total, device)


if __name__ == "__main__":
    main()
