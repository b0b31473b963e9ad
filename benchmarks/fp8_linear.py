"""What FP8 can buy the UNet's linears at all, shape by shape: bf16 against FP8 matmuls with and without their
activation quantisation, and torchao's static and dynamic FP8 layers, on the shapes one CFG step really runs.

    python -m benchmarks.fp8_linear --model sd15-random --out docs/gpu-data/fp8-linear-sd15.json

One bf16 UNet call at CFG batch 2 records every linear the torchao knob would quantise (its own filter) with its
input's shape. Each distinct (tokens, in, out) is then timed alone, one layer at a time: 20 calls captured as one
CUDA graph (as a graphed step runs them; eager timing of these 20-40 us matmuls measures their launches), replayed
`--repeats` times between CUDA events, the median per call:
- `bf16`: `F.linear` (cuBLAS);
- `fp8 mm`: `torch._scaled_mm` on an input already in float8_e4m3fn with per-tensor scales (the ceiling: the
  matmul alone), with cuBLAS's default accumulation, and `fp8 mm fast` with its fast accumulation (no periodic
  promotion to fp32 inside the matmul; what torchao's inference layers ask for);
- `fp8 static`: the same with the input scaled and cast first (one more pass over the activation, which a compiler
  can fuse into the layer before);
- `torchao static` / `torchao dynamic`: the knob's `fp8-static` (after one calibration call) and `fp8-dynamic-tensor`
  layers, as a trial runs them.
Totals weight each shape by how often one UNet call runs it: the sum over a step's linears, the bound FP8 can take
off a step. Prints a table per shape and the totals.
"""
from __future__ import annotations

import argparse
import copy
import json
from collections import Counter
from pathlib import Path


def timed(fn, repeats: int, inner: int = 20) -> tuple[float, bool]:
    """Median milliseconds of one `fn()`: `inner` calls captured as one CUDA graph, replayed `repeats` times between
    CUDA events, as a graphed UNet step runs them (eager timing of a 20 us matmul measures its launch, not the GPU);
    eager calls in a row where the graph cannot be captured. Returns the milliseconds and whether they are eager."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the default stream, as capture wants
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(inner):
                fn()
        run, eager = graph.replay, False
    except RuntimeError:  # a layer that syncs or allocates in a way capture refuses
        torch.cuda.synchronize()
        eager = True

        def run():
            for _ in range(inner):
                fn()
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return sorted(times)[len(times) // 2], eager


def example_call(unet, device, dtype, batch: int = 2) -> tuple[tuple, dict]:
    """(args, kwargs) of one UNet call at the model's native latent size (CFG batch 2 by default), random inputs;
    SDXL's UNet also gets its pooled text embedding and six time ids, sized from its own config."""
    import torch

    size = unet.config.sample_size  # latents at the native resolution (SD1.5 64, SDXL 128)
    sample = torch.randn(batch, unet.config.in_channels, size, size, device=device, dtype=dtype)
    text = torch.randn(batch, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    kwargs = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.add_embedding.linear_1.in_features - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled, device=device, dtype=dtype),
                                       "time_ids": torch.randn(batch, 6, device=device, dtype=dtype)}
    return (sample, torch.tensor(500, device=device), text), kwargs


def main() -> None:
    import torch
    import torch.nn.functional as F

    from workbench.config import TrialConfig
    from workbench.knobs import torchao as knob
    from workbench.trial import build_pipeline

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sd15-random")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path("results/fp8-linear.json"))
    args = p.parse_args()
    from torchao.quantization import quantize_

    device = torch.device("cuda")
    cfg = TrialConfig.from_dict({"model": args.model, "device": "cuda", "precision": "bf16", "quality": False,
                                 "seeds": "0", "steps": 2})
    pipe, _ = build_pipeline(cfg, device)
    unet = pipe.unet
    shapes: Counter = Counter()
    layers: dict = {}

    def record(name):
        def hook(module, inputs, _output):
            x = inputs[0]
            key = (x.numel() // x.shape[-1], module.in_features, module.out_features, module.bias is not None)
            shapes[key] += 1
            layers.setdefault(key, (name, module))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in unet.named_modules() if knob.eligible(m, n)]
    call_args, call_kwargs = example_call(unet, device, torch.bfloat16)
    with torch.no_grad():
        unet(*call_args, **call_kwargs)
    for h in handles:
        h.remove()

    e4m3 = torch.float8_e4m3fn
    top = torch.finfo(e4m3).max
    rows = []
    with torch.no_grad():
        for (tokens, k, n, bias), count in sorted(shapes.items()):
            name, module = layers[(tokens, k, n, bias)]
            x = torch.randn(tokens, k, device=device, dtype=torch.bfloat16)
            w, b = module.weight, module.bias
            sx = (x.abs().amax().float() / top).reshape(())
            sw = (w.abs().amax().float() / top).reshape(())
            xq = (x / sx).clamp(-top, top).to(e4m3)
            wq = (w / sw).clamp(-top, top).to(e4m3).t()  # column-major, as _scaled_mm wants its second operand
            row = {"tokens": tokens, "in": k, "out": n, "per_call": count, "example": name}
            row["bf16_ms"], row["bf16_eager"] = timed(lambda: F.linear(x, w, b), args.repeats)
            for label, fn in (("fp8_mm_ms", lambda: torch._scaled_mm(xq, wq, scale_a=sx, scale_b=sw, bias=b,
                                                                       out_dtype=torch.bfloat16)),
                              ("fp8_mm_fast_ms", lambda: torch._scaled_mm(xq, wq, scale_a=sx, scale_b=sw, bias=b,
                                                                            out_dtype=torch.bfloat16,
                                                                            use_fast_accum=True)),
                              ("fp8_static_ms", lambda: torch._scaled_mm((x / sx).clamp(-top, top).to(e4m3), wq,
                                                                           scale_a=sx, scale_b=sw, bias=b,
                                                                           out_dtype=torch.bfloat16))):
                try:
                    row[label], row[label.replace("_ms", "_eager")] = timed(fn, args.repeats)
                except RuntimeError as err:  # cuBLAS refused this shape for FP8: say so, time the others
                    row[label] = None
                    row[label.replace("_ms", "_error")] = f"{type(err).__name__}: {err}"[:300]
            for label, scheme in (("torchao_static_ms", "fp8-static"), ("torchao_dynamic_ms", "fp8-dynamic-tensor")):
                layer = torch.nn.Sequential(copy.deepcopy(module))
                try:
                    quantize_(layer, knob.config_of(scheme), filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear))
                    if scheme == "fp8-static":
                        from torchao.prototype.quantization.quant_api import Float8ObservedLinear

                        layer(x)  # the observer sees this layer's input once
                        quantize_(layer, knob.static_config("convert"),
                                  filter_fn=lambda m, fqn: isinstance(m, Float8ObservedLinear))
                    row[label], row[label.replace("_ms", "_eager")] = timed(lambda: layer(x), args.repeats)
                except Exception as err:  # torchao's layer refused this shape: say so, time the others
                    row[label] = None
                    row[label.replace("_ms", "_error")] = f"{type(err).__name__}: {err}"[:300]
            rows.append(row)
            shown = {key: row[key] if row[key] is not None else float("nan")
                     for key in ("fp8_mm_ms", "fp8_mm_fast_ms", "fp8_static_ms", "torchao_static_ms",
                                 "torchao_dynamic_ms")}
            print(f"{tokens:6d} x {k:5d} -> {n:5d} (x{count:2d}): bf16 {row['bf16_ms']:.4f} ms, fp8 mm "
                  f"{shown['fp8_mm_ms']:.4f}, fast {shown['fp8_mm_fast_ms']:.4f}, "
                  f"fp8 static {shown['fp8_static_ms']:.4f}, torchao static "
                  f"{shown['torchao_static_ms']:.4f}, dynamic {shown['torchao_dynamic_ms']:.4f}", flush=True)
    totals = {key: sum((r[key] if r[key] is not None else float("nan")) * r["per_call"] for r in rows)
              for key in ("bf16_ms", "fp8_mm_ms", "fp8_mm_fast_ms", "fp8_static_ms", "torchao_static_ms",
                          "torchao_dynamic_ms")}
    print(f"\n{args.model}: {sum(shapes.values())} quantisable linear calls a UNet call (CFG batch 2), "
          f"{len(rows)} shapes; per UNet call, linears alone, CUDA-graphed, one layer at a time:")
    for key, value in totals.items():
        print(f"  {key[:-3]:16s} {value:8.3f} ms  ({totals['bf16_ms'] / value:.2f}x bf16)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "device": torch.cuda.get_device_name(),
                                    "torch": torch.__version__, "repeats": args.repeats,
                                    "timing": "20 calls as one CUDA graph, median replay / 20 (a row's *_eager: "
                                              "eager calls in a row instead)", "rows": rows,
                                    "totals_ms": totals}, indent=1))


if __name__ == "__main__":
    main()
