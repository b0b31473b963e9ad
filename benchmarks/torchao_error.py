"""How far torchao's schemes move the UNet, layer by layer, call by call and image by image, beside the rounding of fp16
itself: tells a defect from the error a scheme is expected to make, and how a model amplifies it over the steps.

    python -m benchmarks.torchao_error --model sdxl-random --out docs/gpu-data/torchao-error-sdxl.json

A short bf16 pipeline call records the UNet's real inputs (latents, timestep, text embeddings, SDXL's added
conditions). Then, for each scheme (torchao's configs, the knob's own filter):
- per linear layer: relative error ||q(x) - f(x)|| / ||f(x)|| of that layer quantised alone, on its recorded input
  (median and 90th percentile over the layers the knob quantises);
- per UNet call: relative error of the whole quantised UNet's output against bf16's, beside fp16 against bf16
  (rounding alone: the floor);
- eager time of one UNet call (CUDA events, median of `--repeats`, after warm-up);
- images: `--steps` step images PSNR to the bf16 images at the same seeds, beside fp16's PSNR to them.
Random weights: the numbers measure numerical deviation, which is what a scheme risks.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

SCHEMES = ("int8-weight-only", "int8-dynamic", "fp8-dynamic-row", "fp8-dynamic-tensor")


def relative(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def main() -> None:
    import torch

    from workbench.config import TrialConfig
    from workbench.knobs import torchao as knob
    from workbench.measure.fidelity import per_image
    from workbench.models import native_resolution
    from workbench.prompts import load_prompts, prompts_for
    from workbench.trial import build_pipeline, generate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sdxl-random")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--resolution", type=int, default=0, help="0: the model's native resolution")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cuda", help="cuda (FP8 needs compute capability 8.9); cpu for a dry run")
    p.add_argument("--out", type=Path, default=Path("results/torchao-error.json"))
    args = p.parse_args()
    from torchao.quantization import quantize_

    device = torch.device(args.device)
    base = {"model": args.model, "device": args.device, "steps": args.steps, "quality": False, "seeds": "0",
            "scheduler": "dpm++2m", "cfg_scale": 7.5}
    cfg = TrialConfig.from_dict({**base, "precision": "bf16"})
    pipe, _ = build_pipeline(cfg, device)
    resolution = args.resolution or native_resolution(pipe)
    prompts = prompts_for(load_prompts(cfg.prompt_set), args.images)
    seeds = list(range(args.images))

    recorded = {}

    def record(module, a, kw):
        recorded.setdefault("call", (a, kw))
    hook = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    t0 = time.perf_counter()
    reference = generate(pipe, cfg, prompts, seeds, resolution, device)  # bf16 images, and the UNet's first inputs
    hook.remove()
    print(f"bf16 images in {time.perf_counter() - t0:.1f} s", flush=True)
    a, kw = recorded["call"]
    unet = pipe.unet

    def call(module, cast=None):
        def c(x):
            return x.to(cast) if cast is not None and torch.is_tensor(x) and x.is_floating_point() else x
        ca = [c(x) for x in a]
        ckw = {k: ({kk: c(vv) for kk, vv in v.items()} if isinstance(v, dict) else c(v)) for k, v in kw.items()}
        with torch.inference_mode():
            return module(*ca, **{**ckw, "return_dict": False})[0]

    def timed(module, cast=None) -> float:
        for _ in range(3):
            call(module, cast)
        times = []
        for _ in range(args.repeats):
            if device.type != "cuda":
                t = time.perf_counter()
                call(module, cast)
                times.append((time.perf_counter() - t) * 1e3)
                continue
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call(module, cast)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return float(sorted(times)[len(times) // 2])

    out_bf16 = call(unet)
    rows = {"bf16": {"unet_call_ms": timed(unet)}}
    half = copy.deepcopy(unet).half()
    rows["fp16"] = {"unet_call_ms": timed(half, torch.float16), "call_rel_error": relative(call(half, torch.float16), out_bf16)}
    del half
    pipe.to(dtype=torch.float16)  # the same weights rounded to fp16 (a second random build would differ)
    images16 = generate(pipe, TrialConfig.from_dict({**base, "precision": "fp16"}), prompts, seeds, resolution, device)
    pipe.to(dtype=torch.bfloat16)
    rows["fp16"]["image_psnr_to_bf16"] = float(per_image(images16, reference)["psnr"].float().mean())
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print("fp16:", rows["fp16"], flush=True)

    linears = {name: m for name, m in unet.named_modules() if knob.eligible(m, name)}
    for scheme in [s for s in args.schemes.split(",") if s]:
        t0 = time.perf_counter()
        errors = {}

        def layer_error(name):
            def hook(module, inputs, output):
                q = copy.deepcopy(module)
                q._forward_hooks.clear()  # the copy would carry this very hook
                quantize_(q, knob.config_of(scheme))
                errors[name] = relative(q(inputs[0]), output)
            return hook
        hooks = [m.register_forward_hook(layer_error(n)) for n, m in linears.items()]
        call(unet)
        for h in hooks:
            h.remove()
        q = copy.deepcopy(unet)
        quantize_(q, knob.config_of(scheme), filter_fn=knob.eligible)
        nan = sorted(n for n, e in errors.items() if e != e)
        values = sorted(e for e in errors.values() if e == e)
        row = {"layers": len(errors), "nan_layers": len(nan), "nan_layer_names": nan[:20], "layer_rel_error_median": values[len(values) // 2],
               "layer_rel_error_p90": values[int(len(values) * 0.9)], "layer_rel_error_max": values[-1],
               "worst_layers": sorted((n for n in errors if n not in nan), key=errors.get)[-5:],
               "call_rel_error": relative(call(q), out_bf16), "unet_call_ms": timed(q)}
        pipe.unet = q
        row["image_psnr_to_bf16"] = float(per_image(generate(pipe, cfg, prompts, seeds, resolution, device),
                                                    reference)["psnr"].float().mean())
        pipe.unet = unet
        row["seconds"] = time.perf_counter() - t0
        rows[scheme] = row
        del q
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"{scheme}:", {k: v for k, v in row.items() if k not in ("worst_layers", "nan_layer_names")}, flush=True)

    result = {"args": {k: str(v) for k, v in vars(args).items()}, "resolution": resolution,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__, "rows": rows,
              "protocol": "one recorded UNet call (bf16 pipeline, first step, CFG batch 2); layer errors on each "
                          "layer's own recorded input; images PSNR to bf16 images at the same seeds"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\n{args.model} at {resolution}px on {result['device']}")
    print(f"{'scheme':18s} {'layer err med':>13s} {'p90':>7s} {'call err':>9s} {'call ms':>8s} {'image PSNR':>10s}")
    for name, r in rows.items():
        print(f"{name:18s} {r.get('layer_rel_error_median', float('nan')):13.4f} {r.get('layer_rel_error_p90', float('nan')):7.4f} "
              f"{r.get('call_rel_error', 0.0):9.4f} {r['unet_call_ms']:8.2f} {r.get('image_psnr_to_bf16', float('inf')):10.1f}")


if __name__ == "__main__":
    main()
