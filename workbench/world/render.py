"""The captioned world: Fashion-MNIST garments, tinted, sized and placed on a plain background.

Every image is a pure function of (split, garment index, attributes), and attributes are drawn from a
seeded generator, so the same call gives the same pixels on any machine.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from workbench.world.fmnist import load_split

VERSION = "world-v1"
IMAGE_SIZE = 64
GARMENTS = ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
            "ankle boot")  # Fashion-MNIST label order
COLOURS = {"red": (220, 40, 40), "orange": (245, 140, 30), "yellow": (240, 220, 40),
           "green": (50, 170, 60), "cyan": (40, 200, 210), "blue": (40, 80, 220),
           "purple": (140, 60, 190), "pink": (245, 130, 190)}
BACKGROUNDS = {"white": (245, 245, 245), "grey": (128, 128, 128), "black": (15, 15, 15),
               "beige": (225, 205, 165)}
POSITIONS = {"top left": (20, 20), "top right": (44, 20), "center": (32, 32),
             "bottom left": (20, 44), "bottom right": (44, 44)}  # garment centre (x, y) in pixels
SIZES = {"small": 24, "large": 36}  # garment side in pixels
JITTER = 2  # +- pixels of placement noise, well inside a position's cell
TEMPLATES = (
    "a {size} {colour} {garment} in the {position} on a {background} background",
    "{colour} {garment}, {size}, {position}, {background} background",
    "a photo of a {size} {colour} {garment} in the {position}, {background} background",
)
ATTRIBUTES = ("garment", "colour", "position", "size", "background")
VOCAB = {"garment": GARMENTS, "colour": tuple(COLOURS), "position": tuple(POSITIONS),
         "size": tuple(SIZES), "background": tuple(BACKGROUNDS)}


@dataclass(frozen=True)
class Scene:
    """Attribute indices of a batch of scenes (one int64 array per attribute) and their garment images."""
    index: np.ndarray  # row in the Fashion-MNIST split; its label is the garment
    garment: np.ndarray
    colour: np.ndarray
    position: np.ndarray
    size: np.ndarray
    background: np.ndarray
    jitter: np.ndarray  # [N, 2] integer offsets
    template: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def captions(self) -> list[str]:
        return [caption(*(int(getattr(self, a)[i]) for a in ATTRIBUTES), template=int(self.template[i]))
                for i in range(len(self))]


def caption(garment: int, colour: int, position: int, size: int, background: int, template: int = 0) -> str:
    """The caption of one scene from its attribute indices."""
    return TEMPLATES[template].format(garment=GARMENTS[garment], colour=VOCAB["colour"][colour],
                                      position=VOCAB["position"][position], size=VOCAB["size"][size],
                                      background=VOCAB["background"][background])


def all_captions(template: int = 0) -> tuple[list[str], np.ndarray]:
    """Every caption the world can produce with one template, and its attribute indices [M, 5]."""
    combos = np.array(list(itertools.product(*(range(len(VOCAB[a])) for a in ATTRIBUTES))))
    return [caption(*map(int, c), template=template) for c in combos], combos


_CAPTION_RE = [re.compile("^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>.+?)", re.escape(t)) + "$") for t in TEMPLATES]


def parse_caption(text: str) -> dict[str, int] | None:
    """Attribute indices of a caption written from one of the world's templates, or None if it is not one."""
    for pattern in _CAPTION_RE:
        match = pattern.match(text.strip().lower())
        if match and all(match[a] in VOCAB[a] for a in ATTRIBUTES):
            return {a: VOCAB[a].index(match[a]) for a in ATTRIBUTES}
    return None


def sample_scenes(split: str, n: int, seed: int, start: int = 0, data_dir: str | None = None,
                  templates: int = 1) -> Scene:
    """Draw n scenes: garments are split rows start..start+n (wrapping), other attributes from `seed`."""
    _, labels = load_split(split, data_dir)
    index = (np.arange(start, start + n) % len(labels)).astype(np.int64)
    rng = np.random.default_rng([seed, start, n])
    return Scene(index=index, garment=labels[index].astype(np.int64),
                 colour=rng.integers(len(COLOURS), size=n), position=rng.integers(len(POSITIONS), size=n),
                 size=rng.integers(len(SIZES), size=n), background=rng.integers(len(BACKGROUNDS), size=n),
                 jitter=rng.integers(-JITTER, JITTER + 1, size=(n, 2)), template=rng.integers(templates, size=n))


def render(scene: Scene, split: str, data_dir: str | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """Render scenes as float images [N, 3, 64, 64] in [0, 1]."""
    images, _ = load_split(split, data_dir)
    as_tensor = lambda a: torch.from_numpy(np.asarray(a)).to(device)  # noqa: E731
    return render_batch(torch.from_numpy(images[scene.index]).to(device), as_tensor(scene.colour),
                        as_tensor(scene.position), as_tensor(scene.size), as_tensor(scene.background),
                        as_tensor(scene.jitter))


def render_batch(garments: torch.Tensor, colour: torch.Tensor, position: torch.Tensor, size: torch.Tensor,
                 background: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """Vectorised renderer on any device: uint8 garments [N, 28, 28] and attribute indices -> [N, 3, 64, 64]."""
    device, n = garments.device, len(garments)
    table = lambda d: torch.tensor(list(d.values()), device=device)  # noqa: E731
    fg = (table(COLOURS).float() / 255)[colour][:, :, None, None]
    bg = (table(BACKGROUNDS).float() / 255)[background][:, :, None, None]
    centres = table(POSITIONS)[position] + jitter
    sides = table(SIZES)[size]
    alpha = torch.zeros(n, 1, IMAGE_SIZE, IMAGE_SIZE, device=device)
    shade = torch.zeros_like(alpha)
    garments = garments.float().div(255).unsqueeze(1)
    for side in SIZES.values():
        rows = torch.nonzero(sides == side).flatten()
        if len(rows) == 0:
            continue
        patch = F.interpolate(garments[rows], size=(side, side), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)[:, 0]
        offset = torch.arange(side, device=device)
        x0, y0 = (centres[rows] - side // 2).unbind(1)
        ys = (y0[:, None, None] + offset[None, :, None]).expand(-1, side, side)
        xs = (x0[:, None, None] + offset[None, None, :]).expand(-1, side, side)
        batch = rows[:, None, None].expand(-1, side, side)
        alpha[batch, 0, ys, xs] = (patch * 2).clamp(0, 1)  # garments are bright on black: intensity is coverage
        shade[batch, 0, ys, xs] = 0.35 + 0.65 * patch
    return bg * (1 - alpha) + fg * shade * alpha


def reference_images(n: int, data_dir: str | None = None, batch: int = 1000):
    """Yield the FID reference set: the first n test-split garments in seed-0 scenes, as uint8 [B, 3, 64, 64]."""
    scene = sample_scenes("test", n, seed=0, data_dir=data_dir)
    for lo in range(0, n, batch):
        part = Scene(**{k: v[lo:lo + batch] for k, v in scene.__dict__.items()})
        yield (render(part, "test", data_dir) * 255).round().to(torch.uint8)


def evaluation_prompts(n: int = 200, seed: int = 1) -> list[str]:
    """The versioned evaluation prompts: n canonical captions of test-split scenes."""
    return sample_scenes("test", n, seed=seed, start=5000).captions()
