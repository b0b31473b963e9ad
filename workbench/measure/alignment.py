"""Prompt alignment on the captioned world: does a zero-shot CLIP recover the prompt's garment, colour, position?

The CLIP scores every caption the world can produce (one template, all attribute combinations); a softmax
over them, summed per attribute value, gives each attribute's prediction (zero-shot classification as in
Radford et al., 2021, marginalised over the other attributes).
"""
from __future__ import annotations

import torch

from workbench.world.render import ATTRIBUTES, all_captions, parse_caption

CLIP_MEAN = CLIP_STD = (0.5, 0.5, 0.5)  # the reference CLIP's image normalisation (see its processor config)
REPORTED = ("garment", "colour", "position")  # the attributes reported as metrics; size and background are logged


def clip_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float images in [0, 1], [N, 3, H, W] -> the CLIP vision tower's normalised input."""
    if images.shape[-1] != size:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bicubic", antialias=True,
                                                 align_corners=False).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=images.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=images.device)[:, None, None]
    return (images - mean) / std


class ZeroShotWorld:
    """Zero-shot attribute classifier over the world's vocabulary, built once per CLIP model."""

    def __init__(self, clip, tokenizer, device: str | torch.device = "cpu", batch: int = 512,
                 text: torch.Tensor | None = None):
        """`text`: the captions' embeddings from `caption_features` (computed here if not given)."""
        self.clip, self.device, self.batch = clip, torch.device(device), batch
        captions, self.combos = all_captions(template=0)
        self.combos = torch.as_tensor(self.combos, device=self.device)
        if text is None:
            text = caption_features(clip, tokenizer, captions, self.device, batch)
        self.text = text.to(self.device)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] -> predicted attribute indices [N, 5] (order of world.ATTRIBUTES)."""
        size = self.clip.config.vision_config.image_size
        out = []
        for i in range(0, len(images), self.batch):
            pixels = clip_pixels(images[i:i + self.batch].to(self.device, torch.float32), size)
            feats = as_features(self.clip.get_image_features(pixel_values=pixels)).float()
            probs = (torch.nn.functional.normalize(feats, dim=-1) @ self.text.T * 100).softmax(-1)
            preds = []
            for a in range(len(ATTRIBUTES)):
                n_values = int(self.combos[:, a].max()) + 1
                marginal = torch.zeros(len(probs), n_values, device=self.device)
                marginal.index_add_(1, self.combos[:, a], probs)
                preds.append(marginal.argmax(-1))
            out.append(torch.stack(preds, 1))
        return torch.cat(out).cpu()

    def hits(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Per-image, per-attribute correctness [N, 5] (bool, order of world.ATTRIBUTES) against the prompts."""
        truth = [parse_caption(p) for p in prompts]
        if any(t is None for t in truth):
            bad = next(p for p, t in zip(prompts, truth) if t is None)
            raise ValueError(f"prompt {bad!r} is not a caption of the captioned world")
        target = torch.tensor([[t[a] for a in ATTRIBUTES] for t in truth])
        return self.predict(images) == target

    def accuracy(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        """Per-attribute accuracy (fraction, 0..1) of the zero-shot predictions against the prompts' attributes."""
        rate = self.hits(images, prompts).float().mean(0)
        return {a: float(rate[i]) for i, a in enumerate(ATTRIBUTES)}


@torch.no_grad()
def caption_features(clip, tokenizer, captions: list[str], device: str | torch.device = "cpu",
                     batch: int = 512) -> torch.Tensor:
    """L2-normalised CLIP text embeddings [len(captions), d] (float32), `batch` captions at a time."""
    device = torch.device(device)
    tokens = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt")
    feats = [clip.get_text_features(input_ids=tokens.input_ids[i:i + batch].to(device),
                                    attention_mask=tokens.attention_mask[i:i + batch].to(device))
             for i in range(0, len(captions), batch)]
    return torch.nn.functional.normalize(torch.cat([as_features(f) for f in feats]).float(), dim=-1)


def as_features(out) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor from get_*_features."""
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output if getattr(out, "pooler_output", None) is not None else out[0]
