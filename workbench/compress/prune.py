"""Structured pruning of a diffusers UNet that really removes structure (smaller tensors, fewer FLOPs).

    info = prune_unet(unet, "channels-taylor", 0.3, batches)   # in place; returns what was removed
    save_pruned(unet, folder, info); unet2 = load_pruned(folder, config)   # bit-exact reload

Methods:
- `channels-magnitude`, `channels-taylor`: dependency-aware channel pruning with torch-pruning's DepGraph
  (Fang et al., CVPR 2023), L2-magnitude or first-order Taylor importance (the latter on the diffusion loss,
  as Diff-Pruning, Fang et al., 2023). conv_out is ignored (the noise prediction keeps its 4 channels). A stage's
  width is cut by the largest fraction <= ratio its GroupNorm allows (GroupNorm keeps num_groups, so a stage of
  C channels can lose only multiples of C/num_groups); attention and MLP widths of that stage take the same
  fraction. Head dimensions shrink uniformly across heads, and the query is rescaled so that the attention
  logits keep the unpruned model's 1/sqrt(head_dim) scale.
- `heads`: whole attention heads (torch-pruning's prune_num_heads), the same number in every attention layer
  (the nearest whole number to ratio x heads, at least one).
- `blocks`: whole residual/attention block pairs, as BK-SDM (Kim et al., 2023) removes them; here the ratio
  chooses how many of the removable pairs go, least important first (importance = the UNet output's MSE
  change when that pair alone is bypassed). A pair is removable where its input and output widths match; a
  removed up-block pair still receives its skip connection and drops it, so the UNet's forward is unchanged.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from workbench.compress.specs import PRUNE_METHODS as METHODS
from workbench.measure.cost import count_flops

NEEDS_DATA = ("channels-taylor", "blocks")  # importance from calibration batches


class PassResnet(nn.Module):
    """Stands in for a removed ResnetBlock2D: returns the block's main input (an up block's skip is dropped)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, hidden_states, temb=None, *args, **kwargs):
        return hidden_states[:, :self.channels]


class PassTransformer(nn.Module):
    """Stands in for a removed Transformer2DModel (the blocks call it with return_dict=False)."""

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,)


def example_inputs(unet, batch: int = 1, tokens: int = 77, device=None) -> dict:
    """A UNet call's keyword arguments at the model's native latent size (for tracing and FLOP counts)."""
    c = unet.config
    gen = torch.Generator().manual_seed(0)
    device = device or next(unet.parameters()).device
    return {"sample": torch.randn(batch, c.in_channels, c.sample_size, c.sample_size, generator=gen).to(device),
            "timestep": torch.full((batch,), 500, dtype=torch.long, device=device),
            "encoder_hidden_states": torch.randn(batch, tokens, c.cross_attention_dim, generator=gen).to(device)}


def unet_cost(unet, tokens: int = 77) -> dict:
    """Parameters and FLOPs of one UNet call at batch 1 (torch FlopCounterMode; CPU SDPA is not counted)."""
    out: dict = {}
    with torch.no_grad(), count_flops(out):
        unet(**example_inputs(unet, 1, tokens))
    return {"params": sum(p.numel() for p in unet.parameters()), "flops": out["flops"]}


def achievable(ratio: float, per_group: int) -> float:
    """Largest fraction <= ratio removable from groups of `per_group` channels (a whole number per group)."""
    return math.floor(ratio * per_group + 1e-6) / per_group


def _stage(name: str, n_stages: int) -> int | None:
    """Resolution stage of a module from its name (0 = full resolution); None for the time embedding."""
    parts = name.split(".")
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) < 2:
        return None
    if parts[0] == "down_blocks":
        return int(parts[1])
    if parts[0] == "up_blocks":
        return n_stages - 1 - int(parts[1])
    if parts[0] == "mid_block":
        return n_stages - 1
    if parts[0] in ("conv_in", "conv_norm_out", "conv_out"):
        return 0
    return None


def _attentions(unet):
    from diffusers.models.attention_processor import Attention

    return [(n, m) for n, m in unet.named_modules() if isinstance(m, Attention)]


def prune_unet(unet, method: str, ratio: float, batches: list[dict] | None = None, tokens: int = 77) -> dict:
    """Prune `unet` in place with `method` at `ratio`; return what was done (JSON-able, for the row and reload)."""
    if method not in METHODS:
        raise ValueError(f"unknown prune method {method!r}; use one of {', '.join(METHODS)}")
    if method in NEEDS_DATA and not batches:
        raise ValueError(f"{method} needs calibration batches")
    unet.eval()
    if method == "blocks":
        return _prune_blocks(unet, ratio, batches)
    return _prune_torch_pruning(unet, method, ratio, batches, tokens)


def _prune_torch_pruning(unet, method: str, ratio: float, batches, tokens: int) -> dict:
    import torch_pruning as tp

    attentions = _attentions(unet)
    head_dim = {n: a.to_q.out_features // a.heads for n, a in attentions}
    num_heads = {layer: a.heads for _, a in attentions for layer in (a.to_q, a.to_k, a.to_v)}
    groups = unet.config.norm_num_groups
    widths = list(unet.config.block_out_channels)
    kwargs: dict = {"num_heads": num_heads, "ignored_layers": [unet.conv_out]}
    if method == "heads":
        n_heads = min(a.heads for _, a in attentions)
        head_ratio = min(max(1, math.floor(ratio * n_heads + 0.5)), n_heads - 1) / n_heads  # nearest, >= 1 head
        # torch-pruning removes heads only inside a scope with a positive width ratio: give the q/k/v layers one
        # (head dims are kept: prune_head_dims=False) and every other layer none
        kwargs.update(pruning_ratio=0.0, prune_num_heads=True, prune_head_dims=False,
                      head_pruning_ratio=max(head_ratio - 1e-9, 0.0),
                      pruning_ratio_dict={a.to_q: max(head_ratio, 1e-3) for _, a in attentions})
        stage_ratio = {"heads": head_ratio}
    else:
        stage_ratio = {s: achievable(ratio, w // groups) for s, w in enumerate(widths)}
        per_module = {}
        for name, module in unet.named_modules():
            stage = _stage(name, len(widths))
            if isinstance(module, (nn.Conv2d, nn.Linear)) and stage is not None:
                per_module[module] = max(stage_ratio[stage] - 1e-9, 0.0)
        kwargs.update(pruning_ratio=ratio, pruning_ratio_dict=per_module)
    if method == "channels-taylor":
        importance = tp.importance.TaylorImportance()
        unet.zero_grad()
        for batch in batches:  # first-order Taylor on the diffusion (epsilon) loss, as Diff-Pruning
            with torch.enable_grad():
                pred = unet(batch["sample"], batch["timestep"], batch["encoder_hidden_states"]).sample
                nn.functional.mse_loss(pred, batch["noise"]).backward()
    else:
        importance = tp.importance.MagnitudeImportance(p=2)
    example = example_inputs(unet, 1, tokens)
    pruner = tp.pruner.MetaPruner(unet, example, importance=importance,
                                  forward_fn=lambda model, inputs: model(**inputs).sample, **kwargs)
    pruner.step()
    unet.zero_grad(set_to_none=True)
    heads = {}
    for name, attn in attentions:
        if method == "heads":
            attn.heads = attn.to_q.out_features // head_dim[name]
        else:
            new_dim = attn.to_q.out_features // attn.heads
            if new_dim != head_dim[name]:  # keep the logits' 1/sqrt(d) scale of the unpruned model
                scale = math.sqrt(new_dim / head_dim[name])
                with torch.no_grad():
                    attn.to_q.weight.mul_(scale)
                    if attn.to_q.bias is not None:
                        attn.to_q.bias.mul_(scale)
        heads[name] = attn.heads
    sync_attributes(unet, heads)
    kept = {f"stage{s}": _stage_width(unet, s) / w for s, w in enumerate(widths)}
    return {"method": "channels" if method != "heads" else "heads", "heads": heads,
            "stage_ratio": stage_ratio, "stage_kept": kept, "passthrough": {}}


def _stage_width(unet, stage: int) -> int:
    """Output channels of the stage's down block (its residual width after pruning)."""
    block = unet.down_blocks[stage]
    return block.resnets[-1].conv2.out_channels


def sync_attributes(unet, heads: dict[str, int]) -> None:
    """Make module attributes agree with the (pruned) weights: diffusers reads some of them in forward."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.upsampling import Upsample2D

    modules = list(unet.named_modules())
    for name, m in modules:  # leaves first: the composites below read their children's synced attributes
        if isinstance(m, nn.Conv2d):
            m.out_channels, m.in_channels = m.weight.shape[0], m.weight.shape[1] * m.groups
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, nn.GroupNorm) and m.weight is not None:
            m.num_channels = m.weight.shape[0]
        elif isinstance(m, nn.LayerNorm) and m.weight is not None:
            m.normalized_shape = tuple(m.weight.shape)
    for name, m in modules:
        if isinstance(m, (Downsample2D, Upsample2D)) and getattr(m, "conv", None) is not None:
            m.channels, m.out_channels = m.conv.in_channels, m.conv.out_channels
        elif isinstance(m, Attention):
            m.heads = heads.get(name, m.heads)
            m.inner_dim = m.to_q.out_features


def _removable_units(unet) -> list[dict]:
    """Residual (+ attention) pairs whose input and output widths match, and the mid block."""
    main_in: dict[str, int] = {}

    def capture(name):
        def hook(module, args, kwargs):
            main_in[name] = (kwargs.get("hidden_states") if "hidden_states" in kwargs else args[0]).shape[1]
        return hook

    handles = [b.register_forward_pre_hook(capture(f"up_blocks.{i}"), with_kwargs=True)
               for i, b in enumerate(unet.up_blocks)]
    with torch.no_grad():
        unet(**example_inputs(unet, 1, 8))
    for h in handles:
        h.remove()
    units = []
    for kind, blocks in (("down_blocks", unet.down_blocks), ("up_blocks", unet.up_blocks)):
        for i, block in enumerate(blocks):
            attns = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                if kind == "down_blocks":
                    width_in = resnet.conv1.in_channels
                else:
                    width_in = main_in[f"up_blocks.{i}"] if j == 0 else block.resnets[j - 1].conv2.out_channels
                if width_in == resnet.conv2.out_channels:
                    modules = [f"{kind}.{i}.resnets.{j}"] + ([f"{kind}.{i}.attentions.{j}"] if attns else [])
                    units.append({"name": f"{kind}.{i}.{j}", "modules": modules, "channels": width_in})
    if unet.mid_block is not None:
        units.append({"name": "mid_block", "modules": ["mid_block"], "channels": None})
    return units


def _bypass(unet, unit: dict) -> dict:
    """Replace a unit's modules by pass-throughs; return the originals (to restore)."""
    saved = {}
    for path in unit["modules"]:
        parent_path, _, attr = path.rpartition(".")
        parent = unet.get_submodule(parent_path) if parent_path else unet
        saved[path] = getattr(parent, attr)
        if path == "mid_block":
            replacement = None
        elif ".resnets." in path:
            replacement = PassResnet(unit["channels"])
        else:
            replacement = PassTransformer()
        if isinstance(parent, nn.ModuleList):
            parent[int(attr)] = replacement
        else:
            setattr(parent, attr, replacement)
    return saved


def _restore(unet, saved: dict) -> None:
    for path, module in saved.items():
        parent_path, _, attr = path.rpartition(".")
        parent = unet.get_submodule(parent_path) if parent_path else unet
        if isinstance(parent, nn.ModuleList):
            parent[int(attr)] = module
        else:
            setattr(parent, attr, module)


def _prune_blocks(unet, ratio: float, batches: list[dict]) -> dict:
    units = _removable_units(unet)

    def outputs():
        with torch.no_grad():
            return [unet(b["sample"], b["timestep"], b["encoder_hidden_states"]).sample for b in batches]

    reference = outputs()
    for unit in units:  # importance: how much the output moves when this unit alone is bypassed
        saved = _bypass(unet, unit)
        unit["importance"] = float(sum(nn.functional.mse_loss(o, r) for o, r in zip(outputs(), reference)) / len(batches))
        _restore(unet, saved)
    n_remove = min(len(units), max(1, math.floor(ratio * len(units) + 0.5)))
    removed = sorted(units, key=lambda u: u["importance"])[:n_remove]
    for unit in removed:
        _bypass(unet, unit)
    passthrough = {path: unit["channels"] for unit in removed for path in unit["modules"]}
    return {"method": "blocks", "heads": {n: a.heads for n, a in _attentions(unet)}, "passthrough": passthrough,
            "removable": [{k: u[k] for k in ("name", "importance")} for u in units],
            "removed": [u["name"] for u in removed], "stage_ratio": {}, "stage_kept": {}}


def save_pruned(unet, folder: Path, info: dict) -> None:
    """safetensors weights + pruned.json (original config, tensor shapes, heads, pass-throughs) in `folder`."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in unet.state_dict().items()}
    save_file(state, str(Path(folder) / "unet.safetensors"))
    spec = {"config": dict(unet.config), "shapes": {k: list(v.shape) for k, v in state.items()},
            "heads": info["heads"], "passthrough": info["passthrough"]}
    (Path(folder) / "pruned.json").write_text(json.dumps(spec, indent=1, default=list))


def load_pruned(folder: Path):
    """Rebuild the pruned UNet from the original config + pruned.json and load its weights (no re-pruning)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    spec = json.loads((Path(folder) / "pruned.json").read_text())
    config = {k: v for k, v in spec["config"].items() if not k.startswith("_")}
    unet = UNet2DConditionModel.from_config(config)
    for path, channels in spec["passthrough"].items():
        _bypass(unet, {"modules": [path], "channels": channels})
    shapes = spec["shapes"]
    for name, module in unet.named_modules():
        for pname, param in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            full = f"{name}.{pname}" if name else pname
            if full in shapes and list(param.shape) != shapes[full]:
                new = torch.empty(shapes[full], dtype=param.dtype)
                if isinstance(param, nn.Parameter):
                    setattr(module, pname, nn.Parameter(new, requires_grad=param.requires_grad))
                else:
                    module.register_buffer(pname, new)
    sync_attributes(unet, spec["heads"])
    unet.load_state_dict(load_file(str(Path(folder) / "unet.safetensors")), strict=True)
    return unet.eval()
