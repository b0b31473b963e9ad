"""Decode speed of the full VAE decoder against the tiny one (TAESD's architecture, `workbench.compress.tiny_vae`),
at one resolution, interleaved rounds, medians, spreads and the ratio from one run.

    python -m benchmarks.vae_decode --model reference --device cpu                      # this CPU, distilled decoder
    python -m benchmarks.vae_decode --model sd15-random --device cuda --resolution 512   # an H100

Speed does not depend on the weights: on a preset (random weights) the tiny decoder is an untrained one of the same
architecture; with `--distilled` (the reference model, or any model the cache holds one for) the distilled decoder
is loaded, built if missing, and the PSNR of its images to the full decoder's on the same latents is printed too.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="reference")
    p.add_argument("--device", default="cpu")
    p.add_argument("--resolution", type=int, default=None, help="image side (default: the model's native)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", default=None, help="fp32 | fp16 | bf16 (default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also time both decoders under torch.compile")
    p.add_argument("--mode", default="default", choices=("default", "reduce-overhead"),
                   help="torch.compile mode with --compile (reduce-overhead: CUDA graphs, as compile_scope unet+vae)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark on (CUDA)")
    p.add_argument("--channels-last", action="store_true", help="both decoders and the latents in channels_last")
    p.add_argument("--distilled", action="store_true", help="use (and build if missing) the distilled tiny decoder")
    p.add_argument("--shape", default="tiny", help="tiny (TAESD-shaped) | tiny-narrow (one block a stage)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from diffusers import AutoencoderTiny

    from workbench.compress.tiny_vae import distilled_decoder, psnr, tiny_config
    from workbench.models import load_pipeline, native_resolution
    from workbench.prompts import load_prompts, prompt_set_version

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
        args.precision or ("fp16" if device.type == "cuda" else "fp32")]
    pipe = load_pipeline(args.model, device)
    if args.distilled:
        tiny, report = distilled_decoder(pipe, load_prompts("world-v1"), prompt_set_version("world-v1"), device,
                                         shape=args.shape)
    else:
        torch.manual_seed(0)
        tiny, report = AutoencoderTiny(**tiny_config(pipe.vae, args.shape)), {"weights": "random (speed only)"}
    full = pipe.vae.to(device, dtype).eval()
    tiny = tiny.to(device, dtype).eval()
    side = (args.resolution or native_resolution(pipe)) // pipe.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    z = torch.randn(args.batch, full.config.latent_channels, side, side, generator=g).to(device, dtype)
    if args.channels_last:  # NHWC: what tensor-core convolutions read without a transpose
        full, tiny = full.to(memory_format=torch.channels_last), tiny.to(memory_format=torch.channels_last)
        z = z.to(memory_format=torch.channels_last)
    decoders = {"full": lambda x: full.decode(x / full.config.scaling_factor).sample,
                "tiny": lambda x: tiny.decode(x).sample}
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.compile:
        mode = None if args.mode == "default" else args.mode
        decoders["full compiled"] = torch.compile(decoders["full"], mode=mode, fullgraph=True)
        decoders["tiny compiled"] = torch.compile(decoders["tiny"], mode=mode, fullgraph=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {k: [] for k in decoders}
    with torch.no_grad():
        for f in decoders.values():  # warm-up (compilation, and CUDA graph recording on the later calls)
            f(z), f(z), f(z)
        for _ in range(args.repeats):  # interleaved rounds: drift of a shared machine hits every decoder alike
            for name, f in decoders.items():
                sync()
                t0 = time.perf_counter()
                f(z)
                sync()
                times[name].append(time.perf_counter() - t0)
        from torch.utils.flop_counter import FlopCounterMode

        flops = {}
        for name in ("full", "tiny"):  # one decode each, counted (matmuls and convolutions)
            with FlopCounterMode(display=False) as counter:
                decoders[name](z)
            flops[name] = counter.get_total_flops() / 1e9
        quality = {}
        if args.distilled:
            quality["psnr_db"] = float(psnr(decoders["tiny"](z).float(), decoders["full"](z).float()).mean())
    params = {"full": sum(q.numel() for q in full.decoder.parameters()),
              "tiny": sum(q.numel() for q in tiny.decoder.parameters())}
    out = {"args": vars(args) | {"out": str(args.out)}, "device_name": torch.cuda.get_device_name(device)
           if device.type == "cuda" else "cpu", "torch": torch.__version__, "latent": list(z.shape),
           "decoder_params": params, "decoder_gflops": flops, "tiny": report if not args.distilled else
           {k: report[k] for k in ("key", "held_out", "cost_s")}, **quality, "decoders": {}}
    print(f"{args.model}, {side * pipe.vae_scale_factor}² batch {args.batch}, {dtype}, {out['device_name']}, "
          f"{args.repeats} interleaved rounds")
    for name, t in times.items():
        q = statistics.quantiles(t, n=4)
        out["decoders"][name] = {"median_ms": statistics.median(t) * 1e3, "iqr_ms": (q[2] - q[0]) * 1e3,
                                 "min_ms": min(t) * 1e3, "max_ms": max(t) * 1e3}
        print(f"  {name:14s} median {statistics.median(t) * 1e3:9.2f} ms  IQR {(q[2] - q[0]) * 1e3:7.2f} ms")
    print(f"  GFLOP a decode: full {flops['full']:.4g}, tiny {flops['tiny']:.4g} ({flops['full'] / flops['tiny']:.1f}x "
          "fewer; torch's FlopCounterMode)")
    for a, b in (("full", "tiny"), ("full compiled", "tiny compiled")):
        if a in times:
            ratios = sorted(x / y for x, y in zip(times[a], times[b]))  # per-round ratios
            r = {"median": statistics.median(ratios), "lo": ratios[len(ratios) // 10],
                 "hi": ratios[-1 - len(ratios) // 10]}
            out[f"speedup {b}"] = r
            print(f"  {b} speed-up: {r['median']:.1f}x (per-round ratios, 10-90 %: {r['lo']:.1f}-{r['hi']:.1f}x)")
    if quality:
        print(f"  tiny decoder PSNR to the full decoder on these latents: {quality['psnr_db']:.1f} dB (random latents)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
