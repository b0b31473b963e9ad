"""Which SDPA kernel computes the UNet's attention fastest, shape by shape: PyTorch's cuDNN, FlashAttention-2 and
memory-efficient backends on the shapes one CFG step really runs, as CUDA graphs.

    python -m benchmarks.attention_shapes --model sd15-random --out docs/gpu-data/attention-sd15.json

A graphed SD1.5 step spends 0.77 ms of its 6.45 in the self-attention at the 64x64 latents (4,096 tokens, 8 heads
of dimension 40), at 28 % of the H100's dense peak (docs/gpu.md, "Where SD1.5's CFG step goes"). Trying another
backend through the ladder costs a full compile a rung; this times the kernels alone. One UNet call at CFG batch 2
(fp16, the trial's precision) records every `scaled_dot_product_attention` call's (batch, heads, query tokens, key
tokens, head dimension); each distinct shape is then timed per backend (`torch.nn.attention.sdpa_kernel`) with
`benchmarks.fp8_linear.timed` (20 calls captured as one CUDA graph, median replay over `--repeats`), and PyTorch's
default choice beside them. A backend that refuses a shape is recorded with its reason. FLOPs per call are
4 x batch x heads x query tokens x key tokens x head dimension (QK^T and PV, no padding counted); TFLOP/s and the
share of the device's dense peak (`workbench.measure.peaks`) follow. Totals weight each shape by its calls a step.
`--device cpu` checks the plumbing on a CPU (eager calls timed with the host clock; PyTorch's CPU attention only).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

BACKENDS = ("default", "cudnn", "flash", "efficient")


def flops(shape: tuple) -> int:
    """Multiply-adds x 2 of one attention call: QK^T and PV, each 2 x B x H x Lq x Lk x D."""
    batch, heads, q, k, d = shape
    return 4 * batch * heads * q * k * d


@contextmanager
def recorded(shapes: Counter):
    """Count each `F.scaled_dot_product_attention` call's (batch, heads, query tokens, key tokens, head dim) while
    the block runs (diffusers' attention processors call it through `torch.nn.functional`)."""
    import torch.nn.functional as F

    sdpa = F.scaled_dot_product_attention

    def counting(query, key, value, *args, **kwargs):
        shapes[(query.shape[0], query.shape[1], query.shape[2], key.shape[2], query.shape[3])] += 1
        return sdpa(query, key, value, *args, **kwargs)

    F.scaled_dot_product_attention = counting
    try:
        yield shapes
    finally:
        F.scaled_dot_product_attention = sdpa


def unet_attention_shapes(unet, device, dtype, batch: int = 2) -> Counter:
    """The attention calls of one UNet call at the model's native latent size (CFG batch 2 by default)."""
    import torch

    from benchmarks.fp8_linear import example_call

    args, kwargs = example_call(unet, device, dtype, batch)
    shapes: Counter = Counter()
    with torch.no_grad(), recorded(shapes):
        unet(*args, **kwargs)
    return shapes


def host_timed(fn, repeats: int, inner: int = 20) -> tuple[float, bool]:
    """`benchmarks.fp8_linear.timed` for a CPU: median milliseconds of one eager `fn()` by the host clock."""
    import statistics
    import time

    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) * 1e3 / inner)
    return statistics.median(times), True


def main(argv: list[str] | None = None) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from benchmarks.fp8_linear import timed
    from workbench.config import TrialConfig
    from workbench.measure.peaks import peak_for
    from workbench.trial import build_pipeline

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sd15-random")
    p.add_argument("--precision", default="fp16", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--device", default="cuda", help="cuda; cpu checks the plumbing")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path("results/attention-shapes.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    cfg = TrialConfig.from_dict({"model": args.model, "device": args.device, "precision": args.precision,
                                 "quality": False, "seeds": "0", "steps": 2})
    pipe, _ = build_pipeline(cfg, device)
    shapes = unet_attention_shapes(pipe.unet, device, dtype)
    cuda = device.type == "cuda"
    time_it = timed if cuda else host_timed
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    try:
        peak = peak_for(name).for_compute(args.precision)[0]
    except LookupError:  # a CPU, or a GPU without a known peak: TFLOP/s alone
        peak = None
    kernels = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}
    rows = []
    with torch.no_grad():
        for shape, count in sorted(shapes.items(), key=lambda kv: -flops(kv[0]) * kv[1]):
            batch, heads, q_len, k_len, d = shape
            q = torch.randn(batch, heads, q_len, d, device=device, dtype=dtype)
            k, v = (torch.randn(batch, heads, k_len, d, device=device, dtype=dtype) for _ in range(2))
            row = {"batch": batch, "heads": heads, "query_tokens": q_len, "key_tokens": k_len, "head_dim": d,
                   "per_call": count, "gflop": flops(shape) / 1e9}
            for backend in BACKENDS:
                try:
                    if backend == "default":
                        ms, eager = time_it(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)
                    else:
                        with sdpa_kernel(kernels[backend]):
                            ms, eager = time_it(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)
                    row[f"{backend}_ms"], row[f"{backend}_eager"] = ms, eager
                    row[f"{backend}_tflops"] = flops(shape) / (ms * 1e-3) / 1e12
                except RuntimeError as err:  # this backend has no kernel for the shape: say so, time the others
                    row[f"{backend}_ms"] = None
                    row[f"{backend}_error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            rows.append(row)
            cells = ", ".join(f"{b} {row[f'{b}_ms'] * 1e3:.1f} us ({row[f'{b}_tflops']:.0f} TFLOP/s)"
                              if row[f"{b}_ms"] is not None else f"{b} refused" for b in BACKENDS)
            print(f"B{batch} H{heads} {q_len}x{k_len} d{d} (x{count}): {cells}", flush=True)
    totals = {b: (sum(r[f"{b}_ms"] * r["per_call"] for r in rows) if all(r[f"{b}_ms"] is not None for r in rows)
                  else None) for b in BACKENDS}
    best = sum(min(r[f"{b}_ms"] for b in BACKENDS if r[f"{b}_ms"] is not None) * r["per_call"] for r in rows)
    step_flops = sum(flops(s) * c for s, c in shapes.items())
    print(f"\n{args.model} ({args.precision}, {name}): {sum(shapes.values())} attention calls a UNet call (CFG "
          f"batch 2), {len(rows)} shapes, {step_flops / 1e9:.1f} GFLOP; per UNet call, attention alone, "
          f"{'CUDA-graphed' if cuda else 'eager, by the host clock'}:")
    for b, total in totals.items():
        print(f"  {b:10s} " + (f"{total:7.3f} ms ({step_flops / (total * 1e-3) / 1e12:.0f} TFLOP/s"
                               + (f", {100 * step_flops / (total * 1e-3) / 1e12 / peak:.0f} % of {peak:.0f})"
                                  if peak else ")") if total is not None else "refuses a shape"))
    print(f"  best per shape {best:7.3f} ms")
    out = {"model": args.model, "precision": args.precision, "device": name, "torch": torch.__version__,
           "repeats": args.repeats, "dense_peak_tflops": peak,
           "timing": ("20 calls as one CUDA graph, median replay / 20 (a row's *_eager: eager calls in a row instead)"
                      if cuda else "20 eager calls by the host clock, median / 20 (plumbing check)"),
           "rows": rows, "totals_ms": totals, "best_per_shape_ms": best}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
