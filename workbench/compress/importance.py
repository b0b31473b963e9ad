"""Layer importance of every Conv2d / Linear of the UNet, the text encoder and the VAE decoder, cached per model.

    scores = importance(pipe, "actgrad", calib)      # {"unet": {"conv_in": 3.1, ...}, "text_encoder": ..., ...}
    keep = most_important(scores["unet"], 0.2)       # the top 20 % of the UNet's layers, to stay in float

Methods (`METHODS`):
- `actgrad`: mean over calibration batches of ||activation|| x ||d loss / d activation|| at each layer's output,
  the loss being the denoising loss (epsilon MSE at random timesteps of the model's own generations) for the UNet
  and the text encoder (whose embeddings feed it), and the VAE round-trip reconstruction loss for the decoder;
  the first-order Taylor estimate of the loss change when the layer's output is perturbed (Molchanov et al., 2019;
  the seed's mixed-precision method).
- `sensitivity`: that layer alone fake-quantised to INT8 (weights symmetric per output channel, input activation
  asymmetric per tensor from its calibration range, the scheme of the PTQ knob), the relative change of the
  component's output over the calibration inputs, ||f_q(x) - f(x)||^2 / ||f(x)||^2 (HAWQ-style direct sensitivity).
- `random`: a seeded random score: the control a kept set chosen by importance has to beat.
Layers that stay float whatever the ranking (the timestep-embedding path) are listed by `always_float`.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from workbench.compress import cache, export
from workbench.compress.calibration import Calibration
from workbench.compress.distill import noised_batches
from workbench.compress.specs import IMPORTANCE_METHODS as METHODS

SETTINGS = {"actgrad_batches": 8, "batch_size": 16, "sensitivity_inputs": 6, "seed": 0}
TIMESTEP_PATH = ("time_embedding.", "time_emb_proj", "add_embedding.", "class_embedding.")


def always_float(component: str, layers: list[str]) -> list[str]:
    """Layers kept in float by every scheme: the UNet's timestep path (quantising the raw timestep embedding breaks
    the denoiser: REFERENCE probes, 22.9 -> 36.2 dB) costs nothing to keep, one row per image."""
    if component != "unet":
        return []
    return [name for name in layers if any(part in name for part in TIMESTEP_PATH)]


def rankable(component: str, layers: list[str]) -> list[str]:
    """The layers a kept fraction is taken from (all weighted layers but the always-float ones)."""
    fixed = set(always_float(component, layers))
    return [name for name in layers if name not in fixed]


def most_important(scores: dict[str, float], fraction: float) -> list[str]:
    """The round(fraction x n) highest-scoring layers (ties broken by network order)."""
    n = round(fraction * len(scores))
    order = sorted(range(len(scores)), key=lambda i: -list(scores.values())[i])
    names = list(scores)
    return [names[i] for i in sorted(order[:n])]


def importance(pipe, method: str, calib: Calibration, components=export.COMPONENTS, progress: bool = False) -> dict:
    """{"scores": {component: {layer: score}} in network order for the rankable layers, "key", "importance_s"};
    each component's ranking is its own cached artifact (per weights, method, calibration and settings)."""
    scores, keys, cost = {}, [], 0.0
    for component in components:
        inputs = {"method": method, "component": component, "calibration": calib.key, **SETTINGS,
                  "weights": cache.state_fingerprint(export.module_of(pipe, component))}

        def build(folder: Path, component=component) -> dict:
            t0 = time.time()
            result = compute(pipe, method, calib, (component,), progress)[component]
            (folder / "importance.json").write_text(json.dumps(result, indent=1))
            return {"cost_s": {"importance_s": time.time() - t0}}

        art = cache.cached(f"importance-{method}", inputs, build)
        scores[component] = json.loads((art.folder / "importance.json").read_text())
        keys.append(art.key)
        cost += art.meta["cost_s"]["importance_s"]
    return {"scores": scores, "key": ",".join(keys), "importance_s": cost}


def compute(pipe, method: str, calib: Calibration, components, progress: bool = False) -> dict:
    if method == "random":
        gen = torch.Generator().manual_seed(SETTINGS["seed"])
        return {c: {name: float(torch.rand((), generator=gen)) for name in
                    rankable(c, export.weighted_layers(export.module_of(pipe, c)))} for c in components}
    if method == "actgrad":
        return actgrad(pipe, calib, components)
    if method == "sensitivity":
        return {c: sensitivity(export.adapter(pipe, c), export.PREFIX[c], calib.inputs(c)[:SETTINGS["sensitivity_inputs"]],
                               rankable(c, export.weighted_layers(export.module_of(pipe, c))), progress)
                for c in components}
    raise ValueError(f"importance: unknown method {method!r}; use one of {', '.join(METHODS)}")


class _ActGrad:
    """Forward hooks that record ||output|| and, through a tensor hook, ||d loss / d output|| of each layer."""

    def __init__(self, module: nn.Module, names: list[str]):
        self.sums = {n: 0.0 for n in names}
        self.handles = [module.get_submodule(n).register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(mod, args, output):
            if output.requires_grad:
                a = output.detach().norm().item()
                output.register_hook(lambda g: self.sums.__setitem__(name, self.sums[name] + a * g.norm().item()))
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def actgrad(pipe, calib: Calibration, components) -> dict:
    """Activation norm x gradient norm of the denoising loss (UNet, text encoder) and of the VAE round trip."""
    s = SETTINGS
    result = {}
    unet, text = pipe.unet, pipe.text_encoder
    layers = {c: rankable(c, export.weighted_layers(export.module_of(pipe, c))) for c in components}
    trackers = {c: _ActGrad(export.module_of(pipe, c), layers[c]) for c in components if c != "vae_decoder"}
    flags = {m: [p.requires_grad for p in m.parameters()] for m in (unet, text, pipe.vae)}
    for m in flags:
        m.requires_grad_(True)  # a distillation teacher may have been frozen in this process
    if trackers:
        gen = torch.Generator().manual_seed(s["seed"])
        batches = noised_batches(calib.samples, pipe.scheduler.config, s["actgrad_batches"], s["batch_size"], s["seed"])
        prompts_ids = torch.cat([t[0] for t in calib.text_encoder])
        with torch.enable_grad():
            for b in batches:
                pick = torch.randint(0, len(prompts_ids), (len(b["sample"]),), generator=gen)
                embeds = text(prompts_ids[pick], return_dict=False)[0] if "text_encoder" in trackers else b[
                    "encoder_hidden_states"]
                pred = unet(b["sample"], b["timestep"], encoder_hidden_states=embeds, return_dict=False)[0]
                nn.functional.mse_loss(pred, b["noise"]).backward()
        unet.zero_grad(set_to_none=True), text.zero_grad(set_to_none=True)
        for c, tracker in trackers.items():
            tracker.remove()
            result[c] = {n: v / len(batches) for n, v in tracker.sums.items()}
    if "vae_decoder" in components:
        vae = pipe.vae
        tracker = _ActGrad(vae.decoder, layers["vae_decoder"])
        with torch.enable_grad():
            for (z,) in calib.vae_decoder:
                with torch.no_grad():
                    target = vae.decoder(z)
                    z_round = vae.post_quant_conv(vae.encode(target.clamp(-1, 1)).latent_dist.mean)
                nn.functional.mse_loss(vae.decoder(z_round), target).backward()
        vae.zero_grad(set_to_none=True)
        tracker.remove()
        result["vae_decoder"] = {n: v / len(calib.vae_decoder) for n, v in tracker.sums.items()}
    for m, before in flags.items():
        for p, flag in zip(m.parameters(), before):
            p.requires_grad_(flag)
    return {c: result[c] for c in components}


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """INT8 symmetric per-output-channel round trip of a weight."""
    scale = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / 127
    shape = (-1,) + (1,) * (w.dim() - 1)
    return (w / scale.view(shape)).round().clamp(-128, 127) * scale.view(shape)


def fake_quant_act(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """UINT8 asymmetric per-tensor round trip of an activation over the calibration range [lo, hi] (0 included)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255
    zero = round(-lo / scale)
    return ((x / scale).round() + zero).clamp(0, 255).sub(zero).mul(scale)


@torch.no_grad()
def sensitivity(model: nn.Module, prefix: str, inputs: list[tuple], names: list[str], progress: bool = False) -> dict:
    """Relative output change with one layer at a time quantised to INT8 (weights and its input activation)."""
    from tqdm.auto import tqdm

    inner = getattr(model, prefix)
    ranges: dict[str, list[float]] = {n: [math.inf, -math.inf] for n in names}

    def record(name):
        def hook(mod, args):
            r = ranges[name]
            r[0], r[1] = min(r[0], args[0].min().item()), max(r[1], args[0].max().item())
        return hook

    handles = [inner.get_submodule(n).register_forward_pre_hook(record(n)) for n in names]
    reference = [model(*x) for x in inputs]
    for h in handles:
        h.remove()
    energy = sum(float(r.pow(2).sum()) for r in reference)
    scores = {}
    for name in tqdm(names, desc="sensitivity", disable=not progress, leave=False):
        layer = inner.get_submodule(name)
        original = layer.weight.data
        layer.weight.data = fake_quant_weight(original)
        lo, hi = ranges[name]
        handle = layer.register_forward_pre_hook(lambda mod, args, lo=lo, hi=hi: (fake_quant_act(args[0], lo, hi),
                                                                                   *args[1:]))
        try:
            change = sum(float((model(*x) - r).pow(2).sum()) for x, r in zip(inputs, reference))
        finally:
            handle.remove()
            layer.weight.data = original
        scores[name] = change / max(energy, 1e-30)
    return scores
