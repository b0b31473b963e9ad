"""torchao knob: weight (and activation) quantisation of the UNet's linear layers with torchao, in its vocabulary:

    quantize_(unet, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda module, fqn: ...)

`int8-weight-only` (Int8WeightOnlyConfig: int8 weights, matmuls in the activation dtype), `int8-dynamic`
(Int8DynamicActivationInt8WeightConfig: int8 x int8 matmuls with per-token activation scales), `fp8-dynamic-row`
(Float8DynamicActivationFloat8WeightConfig with PerRow scales: Hopper and Ada fp8 tensor cores; bf16 weights) and
`fp8-dynamic-tensor` (the same with one PerTensor scale per activation and weight: the cheaper scaling of the two)
and `fp8-static` (Float8StaticActivationFloat8WeightConfig, torchao's observer flow: `step="prepare"` puts a min/max
observer on each linear's input, one calibration pipeline call runs, `step="convert"` fixes one activation scale per
layer; at inference the activation is only scaled and cast, with no amax reduction per call, which is what made both
dynamic FP8 schemes slower than bf16 on an H100, docs/gpu.md). Calibration uses the prompt set's last
`CALIBRATION["prompts"]` prompts at seeds the trials do not use, with the trial's steps and CFG scale.
The filter skips the layers torchao cannot run well here: the timestep/added-condition embeddings (a handful of
rows per call: torchao's int8 matmul `_int_mm` needs more than 16) and linears narrower than `MIN_FEATURES`; and it
keeps the `quant_keep` fraction of linears ranked most important by `importance` (the quantisation knob's fields,
ranked by `workbench.compress.importance`) in the pipeline's float dtype.
Two of torchao's defaults are overridden, both found on an H100 (docs/gpu.md): `set_inductor_config=False`, since
torchao otherwise switches on coordinate-descent tuning for the whole process (`recommended_inductor_config_setter`),
which made every later compile run for many minutes and leaked into the next trial of an in-process sweep (tuning
is `compile_tuning`'s to choose); and FP8's activation scales get a floor (`activation_value_lb`), since a row of
zeros (SDXL's zeroed negative prompt reaching the cross-attention projections) otherwise gets scale 0 and NaNs.
"""
from __future__ import annotations

from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row
from workbench.prompts import load_prompts, prompt_set_version

SCHEMES = ("none", "int8-weight-only", "int8-dynamic", "fp8-dynamic-row", "fp8-dynamic-tensor", "fp8-static")
SKIPPED = ("time_embedding.", "time_emb_proj", "add_embedding.", "class_embedding.")  # a few rows per call
MIN_FEATURES = 16
SCALE_FLOOR = 1e-12  # FP8 scales: amax clamped from below, so an all-zero row quantises to zeros, not 0/0
CALIBRATION = {"prompts": 4, "seed": 1_000_000}  # fp8-static: one pipeline call, images never shown or measured
FIELDS = (Field("torchao", "none", "none | int8-weight-only | int8-dynamic | fp8-dynamic-row | fp8-dynamic-tensor | "
                "fp8-static (activation scales calibrated once): torchao on the UNet's linears (quant_keep of them, "
                "most important first, kept in float)",
                choices=SCHEMES),)


def check(cfg, where: str = "config") -> None:
    if cfg.torchao == "none":
        return
    if cfg.backend != "torch" or cfg.quant != "none":
        raise ConfigError(f"{where}.torchao: quantises torch modules; it does not combine with backend "
                          f"{cfg.backend} or quant {cfg.quant} (NNCF INT8 on ONNX Runtime). Pick one: torchao, or "
                          "quant with backend: onnxruntime")
    if cfg.torchao.startswith("fp8") and cfg.precision != "bf16":
        raise ConfigError(f"{where}.precision: torchao {cfg.torchao} quantises bf16 weights; set precision: bf16")


def check_device(cfg, device) -> None:
    """FP8 tensor cores need CUDA compute capability 8.9 (Ada) or 9.0 (Hopper); torchao itself must be installed."""
    if cfg.torchao == "none":
        return
    try:
        import torchao  # noqa: F401  heavy, optional: the gpu extra
    except ImportError:
        raise ConfigError("torchao: not installed; pip install 'workbench[gpu]' (torchao>=0.18), or torchao: "
                          "none") from None
    if cfg.torchao.startswith("fp8"):
        import torch  # heavy

        if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
            where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
            raise ConfigError(f"torchao: {cfg.torchao} needs FP8 tensor cores (CUDA compute capability 8.9 or "
                              f"higher) and this trial runs on {where}; use int8-weight-only or int8-dynamic")


def config_of(scheme: str):
    """torchao's config object for a scheme name."""
    from torchao.quantization import (Float8DynamicActivationFloat8WeightConfig,  # heavy, optional
                                      Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, PerRow,
                                      PerTensor)

    return {"int8-weight-only": lambda: Int8WeightOnlyConfig(set_inductor_config=False),
            "int8-dynamic": lambda: Int8DynamicActivationInt8WeightConfig(set_inductor_config=False),
            "fp8-dynamic-row": lambda: Float8DynamicActivationFloat8WeightConfig(
                granularity=PerRow(), activation_value_lb=SCALE_FLOOR, set_inductor_config=False),
            "fp8-dynamic-tensor": lambda: Float8DynamicActivationFloat8WeightConfig(
                granularity=PerTensor(), activation_value_lb=SCALE_FLOOR, set_inductor_config=False),
            "fp8-static": lambda: static_config("prepare")}[scheme]()


def static_config(step: str):
    """torchao's static FP8 config for one step of its observer flow (its observer's eps floors the scale)."""
    from torchao.quantization import Float8StaticActivationFloat8WeightConfig, PerTensor  # heavy, optional

    return Float8StaticActivationFloat8WeightConfig(step=step, granularity=PerTensor(), set_inductor_config=False)


def calibrate(pipe, cfg) -> dict:
    """One pipeline call through the observed UNet: the prompt set's last prompts, seeds no trial uses."""
    import torch  # heavy

    prompts = load_prompts(cfg.prompt_set)[-CALIBRATION["prompts"]:]
    seeds = [CALIBRATION["seed"] + i for i in range(len(prompts))]
    size = {"height": cfg.resolution, "width": cfg.resolution} if cfg.resolution else {}
    with torch.no_grad():  # before the prompt cache is attached (the knobs' order): not counted as the trial's
        pipe(prompts, generator=[torch.Generator(device="cpu").manual_seed(s) for s in seeds],
             num_inference_steps=cfg.steps, guidance_scale=cfg.cfg_scale, output_type="latent", **size)
    return {"prompts": len(prompts), "seeds": f"{seeds[0]}-{seeds[-1]}", "steps": cfg.steps,
            "cfg_scale": cfg.cfg_scale, "resolution": cfg.resolution or "native"}


def unobserved_back_to_float(unet, observed_type) -> list[str]:
    """Put back a plain linear for each observed layer the calibration call never ran, and name them: fused QKV
    projections leave the unfused `to_q`/`to_k`/`to_v` in the UNet, unused, and torchao cannot convert a layer whose
    observer saw nothing (it has no scale to fix)."""
    from torch import nn  # heavy

    names = [name for name, m in unet.named_modules()
             if isinstance(m, observed_type) and not hasattr(m.input_act_obs, "min_val")]
    for name in names:
        layer = unet.get_submodule(name)
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        plain.weight, plain.bias = layer.weight, layer.bias
        plain.train(layer.training)
        unet.set_submodule(name, plain)
    return names


def eligible(module, fqn: str) -> bool:
    """A linear torchao can quantise here: not a per-call embedding, wide enough for its int8 matmul."""
    from torch import nn  # heavy

    return (isinstance(module, nn.Linear) and not any(part in fqn for part in SKIPPED)
            and min(module.in_features, module.out_features) >= MIN_FEATURES)


def apply(pipe, cfg, device) -> Row | None:
    """Quantise the UNet's eligible linears in place, keeping the most important `quant_keep` fraction in float."""
    if cfg.torchao == "none":
        return None
    import time

    from torchao.quantization import quantize_  # heavy, optional

    t0 = time.perf_counter()
    kept: list[str] = []
    ranking_key = None
    if cfg.quant_keep:
        from workbench.compress import calibration, importance  # heavy: torch

        calib = calibration.calibration(pipe, load_prompts(cfg.prompt_set), prompt_set_version(cfg.prompt_set))
        ranking = importance.importance(pipe, cfg.importance, calib, ("unet",))
        linears = [name for name, m in pipe.unet.named_modules() if eligible(m, name)]
        scores = {name: s for name, s in ranking["scores"]["unet"].items() if name in linears}
        kept, ranking_key = importance.most_important(scores, cfg.quant_keep), ranking["key"]
    keep = set(kept)
    chosen = [name for name, m in pipe.unet.named_modules() if eligible(m, name) and name not in keep]
    config = config_of(cfg.torchao)
    quantize_(pipe.unet, config, filter_fn=lambda m, fqn: eligible(m, fqn) and fqn not in keep)
    calibrated, unobserved = None, []
    if cfg.torchao == "fp8-static":  # observers are on: calibrate, then fix each layer's activation scale
        from torchao.prototype.quantization.quant_api import Float8ObservedLinear  # heavy, optional

        calibrated = calibrate(pipe, cfg)
        unobserved = unobserved_back_to_float(pipe.unet, Float8ObservedLinear)
        dropped = set(unobserved)
        chosen = [name for name in chosen if name not in dropped]
        quantize_(pipe.unet, static_config("convert"), filter_fn=lambda m, fqn: isinstance(m, Float8ObservedLinear))
    protocol = {"scheme": cfg.torchao, "config": type(config).__name__, "quantized": len(chosen),
                "kept_float": kept, "importance": ranking_key, "skipped": list(SKIPPED), "min_features": MIN_FEATURES,
                "set_inductor_config": False,
                "fp8_scale_floor": SCALE_FLOOR if cfg.torchao.startswith("fp8-dynamic") else None,
                "calibration": calibrated,
                "unobserved_float": {"layers": len(unobserved),
                                     "kinds": sorted({name.rsplit(".", 1)[-1] for name in unobserved})}}
    return Row({"torchao_layers": len(chosen), "torchao_s": time.perf_counter() - t0}, {"torchao": protocol})
