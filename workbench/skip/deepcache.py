"""Feature caching across sampling steps, after DeepCache (Ma, Fang & Wang, "DeepCache: Accelerating Diffusion
Models for Free", CVPR 2024).

Adjacent steps change a UNet's deep features little. On a full step the whole UNet runs and the feature entering
the up block of skip branch `depth` is kept; on a shallow step only `conv_in`, down blocks 0..depth, the up blocks
of that branch and the output layers run, the kept feature standing in for everything deeper. Depth 0 reuses the
most (the outermost branch); the deepest branch reuses only the mid block.

    unet = DeepCacheUNet(pipe.unet, depth=0, full=FullSteps(3))
    unet.start()        # before each pipeline call: the first call is always full

The decision is made outside the module's math (a forward pre-hook), which runs as one of two paths chosen by a
string argument, so `torch.compile` specialises one graph per path (and per batch shape: the CFG cutoff halves
the batch, and the kept feature's conditional half is reused). The kept feature is copied out of the compiled
path's output, so CUDA graphs may reuse their memory on the next replay.
"""
from __future__ import annotations

import math

import torch
from torch import nn

SCHEDULES = ("uniform", "quadratic")


class FullSteps:
    """Which UNet calls of a sampling loop run in full: every `interval`-th (uniform), or as many spaced
    quadratically over the first `calls` (i = calls * (j / k)^2: denser early, where the image's layout forms;
    DeepCache's non-uniform 1:N strategy makes the same trade), then every `interval`-th again. Counted in UNet
    calls: a scheduler that calls the UNet twice in a step (PNDM's first, Heun's every one) counts both."""

    def __init__(self, interval: int, schedule: str = "uniform", calls: int = 0):
        self.interval, self.schedule, self.calls = max(1, interval), schedule, calls
        chosen: list[int] = []
        if schedule == "quadratic" and self.interval > 1:
            k = math.ceil(calls / self.interval)
            for j in range(k):
                i = int(calls * (j / k) ** 2)
                chosen.append(max(i, chosen[-1] + 1) if chosen else 0)
        self.chosen = frozenset(chosen)

    def __contains__(self, i: int) -> bool:
        if self.schedule == "quadratic" and i < self.calls:
            return i in self.chosen
        return (i - (self.calls if self.schedule == "quadratic" else 0)) % self.interval == 0

    def __repr__(self) -> str:
        return f"FullSteps(interval={self.interval}, schedule={self.schedule!r}, calls={self.calls})"


def branch_residuals(unet, depth: int) -> int:
    """How many skip residuals the up blocks of branch `depth` take; ValueError if the shallow down blocks do not
    produce them (a UNet whose blocks were pruned unevenly, say)."""
    n = len(unet.down_blocks)
    if not 0 <= depth < n:
        raise ValueError(f"this UNet has {n} levels: branch depth runs 0..{n - 1}")
    made = 1 + sum(len(b.resnets) + (1 if getattr(b, "downsamplers", None) else 0) for b in unet.down_blocks[:depth + 1])
    taken = sum(len(b.resnets) for b in unet.up_blocks[n - 1 - depth:])
    if taken > made:
        raise ValueError(f"branch {depth}'s up blocks take {taken} skip residuals, its down blocks make {made}")
    return taken


class Paths(nn.Module):
    """UNet2DConditionModel's forward (diffusers 0.42) split at one skip branch: `mode` "full" runs everything and
    also returns the feature entering the branch's first up block, "shallow" runs the branch around `cached`."""

    def __init__(self, unet, depth: int):
        super().__init__()
        self.unet, self.depth = unet, depth
        self.residuals = branch_residuals(unet, depth)
        self.first_up = len(unet.up_blocks) - 1 - depth

    def forward(self, sample, timestep, encoder_hidden_states, added_cond_kwargs, cross_attention_kwargs,
                timestep_cond, mode: str, cached):
        u = self.unet
        upsample_sizes = any(d % 2 ** u.num_upsamplers for d in sample.shape[-2:])
        if u.config.center_input_sample:
            sample = 2 * sample - 1.0
        emb = u.time_embedding(u.get_time_embed(sample=sample, timestep=timestep), timestep_cond)
        aug = u.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)
        emb = emb + aug if aug is not None else emb
        if u.time_embed_act is not None:
            emb = u.time_embed_act(emb)
        text = u.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states,
                                               added_cond_kwargs=added_cond_kwargs)
        attn = dict(encoder_hidden_states=text, cross_attention_kwargs=cross_attention_kwargs)

        h = u.conv_in(sample)
        res = (h,)
        for block in (u.down_blocks if mode == "full" else u.down_blocks[:self.depth + 1]):
            if getattr(block, "has_cross_attention", False):
                h, r = block(hidden_states=h, temb=emb, **attn)
            else:
                h, r = block(hidden_states=h, temb=emb)
            res += r
        if mode == "full":
            if u.mid_block is not None:
                h = u.mid_block(h, emb, **attn) if getattr(u.mid_block, "has_cross_attention", False) \
                    else u.mid_block(h, emb)
            first = 0
        else:
            res, h, first = res[:self.residuals], cached, self.first_up
        feature = None
        for i, block in enumerate(u.up_blocks[first:], start=first):
            if i == self.first_up:
                feature = h
            take = len(block.resnets)
            r, res = res[-take:], res[:-take]
            size = res[-1].shape[2:] if upsample_sizes and i < len(u.up_blocks) - 1 else None
            if getattr(block, "has_cross_attention", False):
                h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=r, upsample_size=size, **attn)
            else:
                h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=r, upsample_size=size)
        if u.conv_norm_out is not None:
            h = u.conv_act(u.conv_norm_out(h))
        return u.conv_out(h), feature


class DeepCacheUNet(nn.Module):
    """A UNet that runs its full path on the calls in `full` and its shallow path around the kept feature on the
    others. Attributes it does not have (config, dtype, device, attn_processors...) are the UNet's."""

    compiles_itself = True  # the compile knob compiles the two paths, not the step-counting wrapper

    def __init__(self, unet, depth: int, full: FullSteps):
        super().__init__()
        unsupported = [name for name, value in (("class embeddings", unet.class_embedding),
                                                ("image hints", unet.config.addition_embed_type == "image_hint"))
                       if value]
        if unsupported:
            raise ValueError(f"feature caching does not split UNets with {', '.join(unsupported)}")
        self.paths = Paths(unet, depth)
        self.full = full
        self.step, self.cache = 0, None
        self.calls = {"full": 0, "shallow": 0}
        self.cudagraphs = False
        self.register_forward_pre_hook(self._decide, with_kwargs=True)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["paths"].unet, name)

    def start(self) -> None:
        """A new sampling loop: the next call is step 0, and runs in full."""
        self.step, self.cache = 0, None

    def compile(self, **options) -> None:
        """Compile the paths (torch's in-place `nn.Module.compile`): one graph per path and input shape."""
        self.paths.compile(**options)
        # reduce-overhead as a mode, or its settings passed as Inductor options (compile_tuning with CUDA graphs)
        self.cudagraphs = (options.get("mode") == "reduce-overhead"
                           or bool(options.get("options", {}).get("triton.cudagraphs")))

    def _decide(self, module, args, kwargs):
        if "deepcache" in kwargs:  # decided already: a meta-device copy counting the FLOPs of a recorded call
            return None
        sample = args[0] if args else kwargs["sample"]
        full = self.cache is None or self.step in self.full
        self.step += 1
        cached = None if full else _fit(self.cache, sample.shape[0])
        return args, {**kwargs, "deepcache": "full" if full else "shallow", "cached": cached}

    def forward(self, sample, timestep, encoder_hidden_states, timestep_cond=None, attention_mask=None,
                cross_attention_kwargs=None, added_cond_kwargs=None, return_dict: bool = True, deepcache: str = "full",
                cached=None, **extra):
        given = [k for k, v in extra.items() if v is not None] + (["attention_mask"] if attention_mask is not None else [])
        if given:
            raise ValueError(f"feature caching runs the UNet without {', '.join(given)} (ControlNet, adapters, masks)")
        if self.cudagraphs:  # each call a new step: earlier outputs of either graph may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        out, feature = self.paths(sample, timestep, encoder_hidden_states, added_cond_kwargs, cross_attention_kwargs,
                                  timestep_cond, deepcache, cached)
        self.calls[deepcache] += 1
        if feature is not None:
            self.cache = feature.detach().clone()  # out of the compiled path's (CUDA graph's) memory
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput  # heavy: diffusers

        return UNet2DConditionOutput(sample=out)


def _fit(cache: torch.Tensor, batch: int) -> torch.Tensor:
    """The kept feature for a call of `batch` images: after a CFG cutoff halves the batch, its conditional half."""
    if cache.shape[0] == batch:
        return cache
    if cache.shape[0] == 2 * batch:
        return cache.chunk(2)[-1]
    raise ValueError(f"feature caching kept a batch of {cache.shape[0]}, the UNet is called with {batch}")
