"""A trial's image quality, streamed: update per batch of images, then every metric with its spread and protocol.

Memory stays bounded by the batch plus per-image feature vectors (2048 Inception + one CLIP embedding, about
8.7 KiB an image for the reference CLIP), never by the images: a trial of any N keeps no image in memory.

    q = Quality(cfg, device, baseline_dir, cache_dir, meaningful=True)
    for images, prompts, seeds in batches:      # uint8 [B, 3, H, W]
        q.update(images, prompts, seeds)
    metrics, protocols, absent = q.finish()
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from workbench import paths
from workbench.images import image_name
from workbench.measure import clip_score as clip_mod
from workbench.measure import cmmd as cmmd_mod
from workbench.measure import fid as fid_mod
from workbench.measure import kid as kid_mod
from workbench.measure.alignment import REPORTED, ZeroShotWorld, caption_features
from workbench.measure.clip_score import load_clip
from workbench.measure.fid_weights import has_reference_set
from workbench.measure.fidelity import per_image
from workbench.measure.spread import mean_se, wilson
from workbench.world.render import ATTRIBUTES, all_captions, parse_caption, reference_images

WORLD_REFERENCE = "world-v1 test split, seed-0 scenes (workbench.world.reference_images)"
DISTRIBUTION = ("fid", "kid", "cmmd")


class Quality:
    """Accumulates per-image quality evidence batch by batch; `finish` turns it into metrics with spreads."""

    def __init__(self, cfg, device: torch.device, baseline_dir: str | Path | None, cache_dir: str | Path,
                 fid_interval: bool = True, meaningful: bool = True):
        self.cfg, self.device, self.cache_dir = cfg, device, Path(cache_dir)
        self.fid_interval = fid_interval
        self.meaningful = meaningful  # False for random weights: every protocol says the numbers mean nothing
        self.baseline_dir = baseline_dir
        self._parse = parse_caption
        self.n = 0
        self.inception: list[torch.Tensor] = []
        self.clip_embeddings: list[torch.Tensor] = []
        self.clip_scores: list[torch.Tensor] = []
        self.hits: list[torch.Tensor] = []
        self.fidelity: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": []}
        self.in_world = True
        self.fidelity_absent = None if baseline_dir else "no baseline images (this trial is the baseline, or it ran alone)"
        self.distribution = has_reference_set(cfg)  # without a reference set no Inception feature is computed

    @torch.no_grad()
    def update(self, images: torch.Tensor, prompts: list[str], seeds: list[int]) -> None:
        """Add one batch of uint8 images [B, 3, H, W] with their prompts and seeds."""
        self.n += len(images)
        on_device = images.to(self.device)
        if self.distribution:
            self.inception.append(fid_mod.features(on_device, self.device))
        self.clip_embeddings.append(clip_mod.image_embeddings(on_device, self.cfg.clip_model, self.device))
        self.clip_scores.append(clip_mod.clip_scores(on_device, prompts, self.cfg.clip_model))
        self.in_world = self.in_world and all(self._parse(p) is not None for p in prompts)
        if self.in_world:
            self.hits.append(_zero_shot(str(self.device), str(self.cache_dir)).hits(on_device.float() / 255, prompts).cpu())
        if self.fidelity_absent is None:
            base = baseline_images(self.baseline_dir, seeds, images.shape)
            if isinstance(base, str):
                self.fidelity_absent = base
            else:
                for name, values in per_image(images, base).items():
                    self.fidelity[name].append(values)

    def per_image(self, seeds: list[int]) -> dict[str, np.ndarray]:
        """Every image's evidence, in image order: what a paired comparison of two trials on the same seeds and
        prompts resamples (`workbench.measure.paired`); alignment hits in the order of world.ATTRIBUTES."""
        out = {"seeds": np.asarray(seeds, dtype=np.int64), "clip_embedding": torch.cat(self.clip_embeddings).numpy(),
               "clip_score": torch.cat(self.clip_scores).numpy()}
        if self.inception:
            out["inception"] = torch.cat(self.inception).numpy()
        if self.in_world and self.hits:
            out["align_hits"] = torch.cat(self.hits).numpy()
        return out

    def finish(self) -> tuple[dict, dict, dict]:
        """(metrics, protocols, absent): every quality metric with its spread columns and how it was measured."""
        metrics: dict[str, float] = {}
        protocols: dict[str, dict] = {}
        absent: dict[str, str] = {}
        note = {} if self.meaningful else {"warning": "random weights: quality is meaningless"}
        self._distribution(metrics, protocols, absent, note)
        scores = torch.cat(self.clip_scores)
        mean, se = mean_se(scores.numpy())
        metrics["clip_score"], metrics["clip_score_se"] = max(mean, 0.0), se
        protocols["clip_score"] = {"implementation": "torchmetrics CLIPScore (100*cos, mean clamped at 0)", **note,
                                   "clip_model": str(clip_mod.clip_folder(self.cfg.clip_model)), "n_images": self.n,
                                   "spread": "standard error of the per-image scores"}
        self._alignment(metrics, protocols, absent, note)
        if self.fidelity_absent is not None:
            absent["psnr"] = absent["ssim"] = self.fidelity_absent
        else:
            for name, values in self.fidelity.items():
                metrics[name], metrics[f"{name}_se"] = mean_se(torch.cat(values).numpy())
            protocols["psnr"] = protocols["ssim"] = {
                "implementation": "torchmetrics functional PSNR/SSIM, data range 1, PSNR capped at 100 dB",
                "against": str(self.baseline_dir), "n_images": self.n, "spread": "standard error over images", **note,
                **baseline_note(self.baseline_dir)}
        return metrics, protocols, absent

    def _distribution(self, metrics, protocols, absent, note) -> None:
        n = self.n
        reference = fid_reference(self.cfg, n)
        if n < 4:
            reference = "FID, KID and CMMD need at least 4 images; give more seeds"
        if isinstance(reference, str):
            for name in DISTRIBUTION:
                absent[name] = reference
            return
        name, _ = reference
        real, real_clip = reference_evidence(self.cfg, reference, n, self.device, self.cache_dir)
        real = real.to(self.device)
        fake = torch.cat(self.inception).to(self.device)
        common = {"feature_extractor": fid_mod.EXTRACTOR, "resize": fid_mod.RESIZE, "n_generated": n,
                  "n_reference": n, "reference_set": name, **note}
        metrics["fid"] = fid_mod.fid(fake, real)
        protocols["fid"] = {"implementation": "Frechet distance of float64 Inception moments as torchmetrics FrechetInceptionDistance; trace term by a symmetric eigendecomposition (equal to torchmetrics within 1e-6)", **common}
        if self.fid_interval:
            draws = fid_mod.bootstrap_resamples(n)
            metrics["fid_lo"], metrics["fid_hi"] = fid_mod.fid_interval(fake, real, draws,
                                                                           point=metrics["fid"])
            protocols["fid"]["spread"] = (f"95 % bootstrap interval over the generated images ({draws} draws, "
                                          "reference statistics fixed; percentile interval shifted by the "
                                          "bootstrap bias so that it is centred on the reported FID)")
        size = kid_mod.subset_size(n, n)
        metrics["kid"], metrics["kid_sd"] = kid_mod.kid(fake, real, size=size)
        subsets = {"subsets": kid_mod.SUBSETS, "subset_size": size, "subset_seed": 0,
                   "spread": "standard deviation over subsets"}
        protocols["kid"] = {"implementation": "torchmetrics KernelInceptionDistance: unbiased MMD^2, kernel "
                                              "(x.y/2048 + 1)^3", **common, **subsets}
        clip_name = self.cfg.clip_model
        metrics["cmmd"], metrics["cmmd_sd"] = cmmd_mod.cmmd(torch.cat(self.clip_embeddings).to(self.device),
                                                            real_clip.to(self.device), size=size)
        protocols["cmmd"] = {"implementation": "CMMD (Jayasumana et al., 2024): unbiased MMD^2, Gaussian RBF "
                                               f"sigma {cmmd_mod.SIGMA:g} on L2-normalised CLIP image embeddings, "
                                               f"x{cmmd_mod.SCALE:g}",
                             "clip_model": str(clip_mod.clip_folder(clip_name)), "n_generated": n, "n_reference": n,
                             "reference_set": name, **subsets, **note}

    def _alignment(self, metrics, protocols, absent, note) -> None:
        if not self.in_world:
            for name in ("align_mean",) + tuple(f"align_{a}" for a in REPORTED):
                absent[name] = "prompts are not captions of the captioned world; alignment needs prompt_set world-*"
            return
        hits = torch.cat(self.hits)
        n = len(hits)
        for a in REPORTED:
            k = int(hits[:, ATTRIBUTES.index(a)].sum())
            metrics[f"align_{a}"] = k / n
            metrics[f"align_{a}_lo"], metrics[f"align_{a}_hi"] = wilson(k, n)
        mean = float(hits[:, [ATTRIBUTES.index(a) for a in REPORTED]].double().mean())
        metrics["align_mean"] = mean
        # Wilson with one trial per image (not three): conservative, and unlike a normal interval it does not
        # collapse to a point when every attribute of every image is right
        metrics["align_mean_lo"], metrics["align_mean_hi"] = wilson(mean * n, n)
        rates = hits.double().mean(0)
        protocols["align_mean"] = {
            "implementation": "zero-shot reference CLIP over all 3,200 world captions, marginalised per attribute",
            "n_images": n, "spread": "attributes: 95 % Wilson interval; mean: 95 % Wilson interval counting each "
                                     "image as one trial (conservative)",
            "size_accuracy": float(rates[ATTRIBUTES.index("size")]),
            "background_accuracy": float(rates[ATTRIBUTES.index("background")]), **note}


def fid_reference(cfg, n: int):
    """(name, image iterator factory) of the reference set for FID, KID and CMMD, or the reason there is none."""
    if not has_reference_set(cfg):
        return "no reference image set for this model; set fid_reference to a folder of real images"
    if cfg.fid_reference == "auto":  # a model whose reference set the workbench ships
        return WORLD_REFERENCE, lambda: reference_images(n)
    available = sum(1 for p in Path(cfg.fid_reference).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if available < n:
        return (f"fid_reference folder has {available} images, FID/KID/CMMD need {n} (equal N); add images or use "
                "fewer seeds")
    return str(Path(cfg.fid_reference).resolve()), lambda: fid_mod.folder_images(cfg.fid_reference, n)


def reference_evidence(cfg, reference: tuple, n: int, device: torch.device,
                       cache_dir: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(Inception features, CLIP image embeddings) of the first n reference images, each computed once and cached
    under `cache_dir` (FID, KID and CMMD of every trial of that N, and paired comparisons, read them)."""
    name, images_fn = reference
    real = fid_mod.reference_features(name, n, images_fn, Path(cache_dir), device)
    real_clip = fid_mod.cached_reference(
        fid_mod.cache_path(Path(cache_dir), "clip", name, n, clip_mod.identity(cfg.clip_model)),
        lambda: torch.cat([clip_mod.image_embeddings(b.to(device), cfg.clip_model, device) for b in images_fn()]))
    return real, real_clip


@lru_cache(maxsize=2)
def _zero_shot(device: str, cache_dir: str | None = None):
    """The reference CLIP's zero-shot classifier, once per process; its 3,200 caption embeddings are read from
    `cache_dir` (computed and written there by the first trial) or, without one, computed."""
    model, processor = load_clip("reference")
    text = world_caption_features(Path(cache_dir)) if cache_dir else None
    return ZeroShotWorld(model.to(device), processor.tokenizer, device, text=text)


def world_caption_features(cache_dir: Path) -> torch.Tensor:
    """The reference CLIP's embeddings of every world caption (CPU), cached under `cache_dir` by the captions and
    the CLIP's identity: a fresh kernel reads them in milliseconds instead of running the text encoder 3,200 times."""
    captions, _ = all_captions(template=0)
    key = hashlib.sha256("\n".join(captions).encode()).hexdigest()[:16]
    path = fid_mod.cache_path(cache_dir, "text", f"world-captions-{key}", len(captions), clip_mod.identity("reference"))

    def compute() -> torch.Tensor:
        model, processor = load_clip("reference")
        return caption_features(model.to("cpu"), processor.tokenizer, captions)

    return fid_mod.cached_reference(path, compute)


def prepare(cfg, device: torch.device, cache_dir: str | Path) -> list[str]:
    """Load ahead of a trial, read-only, what `Quality` of this configuration will load (a warm kernel does while the
    previous trial runs): the FID Inception network (run at the trial's batch sizes, so that TorchScript has
    optimised it), the CLIP, the world captions' embeddings and the cached reference features of N images with
    their moments. Beyond loading, on the CPU only: on a GPU they would count in the trial's peak memory. Returns
    the names of what was prepared."""
    done = []
    if has_reference_set(cfg):
        fid_mod.extractor(torch.device("cpu"))
        done.append("fid-inception")
    load_clip(cfg.clip_model)
    done.append("clip")
    if device.type != "cpu":
        return done
    n = len(cfg.seed_list)
    batches = {min(cfg.batch_size, n), n % cfg.batch_size} - {0}  # the sizes `update` will see
    if has_reference_set(cfg):
        fid_mod.warm_up({size for b in batches for size in (min(b, fid_mod.BATCH), b % fid_mod.BATCH) if size})
        done.append("fid-inception-warm-up")
    if cfg.prompt_set.startswith("world-"):
        _zero_shot(str(device), str(cache_dir))
        done.append("caption-embeddings")
    reference = fid_reference(cfg, n)
    if not isinstance(reference, str) and fid_mod.reference_path(reference[0], n, cache_dir).is_file():
        fid_mod.prepare_reference(fid_mod.reference_features(reference[0], n, reference[1], Path(cache_dir), device))
        done.append("fid-reference")
    return done


def baseline_note(baseline_dir) -> dict:
    """The fidelity protocol's note when the baseline's images were regenerated on this host, not the originals."""
    mark = Path(baseline_dir).parent / paths.REGENERATED if baseline_dir else None
    return {"baseline_regenerated": json.loads(mark.read_text())} if mark and mark.is_file() else {}


def baseline_images(baseline_dir, seeds: list[int], shape):
    """The baseline trial's images of these seeds as uint8 [B, 3, H, W], or the reason they cannot be used."""
    from PIL import Image

    files = [Path(baseline_dir) / image_name(s) for s in seeds]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        return f"baseline has no image for {missing[0]} (baseline failed or used other seeds)"
    base = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])).permute(0, 3, 1, 2)
    if tuple(base.shape) != tuple(shape):
        return f"baseline images are {tuple(base.shape[2:])}, these {tuple(shape[2:])}; fidelity needs equal resolution"
    return base
