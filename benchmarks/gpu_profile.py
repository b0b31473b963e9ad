"""Where a GPU image's time goes beyond its kernels: one image of a ladder rung profiled after warm-up, the GPU's idle
gaps attributed to what the host was doing when it launched the work that ended each gap.

    python -m benchmarks.gpu_profile --model sd15-random --rung "graphs all +cudnn" --out results/gpu-profile.json
    python -m benchmarks.gpu_profile --analyse results/gpu-profile.trace.json   # a saved trace, anywhere

The configuration is `benchmarks.gpu_ladder`'s rung (same base settings), built with the trial's own functions
(`build_pipeline`, `generate`: the call a trial times) and warmed up (compilation, CUDA graph recording) before
`--images` images are profiled one call at a time with torch.profiler (CPU and CUDA activity). Phases are labelled
with `record_function` through hooks: the text encoder(s), the UNet and the VAE decoder (module hooks, as the
trial's stage timer), the scheduler's `step`, `set_timesteps`, `prepare_latents` and the image's conversion after
the pipeline (`image_processor.postprocess`); the rest of the pipeline's Python, and the trial's uint8 conversion
and copy to the host, is "pipeline". For each image: wall time, the GPU's busy time (the
union of kernels, copies and memsets) and its idle time, each idle gap attributed to the phase whose host code
launched the kernel that ended it, gaps under 5 µs counted apart as spacing (the GPU's own latency from one kernel
to the next, inside a CUDA graph too), longer ones as waiting; the medians over the images are printed and written to `--out`, with the
Chrome trace of the last image beside it (`--trace`). On random weights this is what the runtime knobs leave: host
work the GPU waits for. Kernel time is also summed by kind (`kind`: Triton, attention, convolution, matmul,
copies), for the whole image and per phase, and the host's waits for the device (stream, device and event
synchronisations, blocking copies) counted per phase with the time the host spent in them. The kernels that take
the most time are listed by name and launch grid (one kernel name serves several shapes: the grid tells them apart),
with their calls and median (and shortest, longest) duration: under CUDA graphs the profiler sees no operator
shapes, so which layer a kernel serves is read from its grid and call count.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

IMAGE = "image"
SPACING_US = 5.0  # idle gaps shorter than this are kernel-to-kernel spacing, longer ones waiting for the host
TOP_KERNELS = 25


def kind(event: dict) -> str:
    """What a GPU activity computes, from its kernel name: Inductor's generated Triton kernels, attention (cuDNN's
    fused SDPA, FlashAttention, CUTLASS' memory-efficient kernel), convolutions (cuDNN's implicit GEMMs), matmuls
    (cuBLAS/cuBLASLt, CUTLASS), copies and memsets, other (ATen's own kernels)."""
    if event.get("cat") in ("gpu_memcpy", "gpu_memset"):
        return "copy/memset"
    name = event["name"].lower()
    if name.startswith("triton"):  # before attention: Inductor names fused kernels after the ops they fuse
        return "triton"
    if any(k in name for k in ("sdpa", "flash", "fmha", "attention")):
        return "attention"
    if any(k in name for k in ("fprop", "conv", "implicit")):
        return "convolution"
    if any(k in name for k in ("gemm", "nvjet", "cutlass", "cublas", "splitk")):
        return "matmul"
    return "other"


SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")  # host blocks


def host_waits(events: list, start: float, end: float) -> list:
    """The CUDA runtime calls inside [start, end] in which the host waited for the device: stream, device and event
    synchronisations and blocking copies (`.item()`, `.cpu()`, `nonzero`, `torch.linalg.solve`'s error check...)."""
    return [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver") and e["name"] in SYNCS
            and start <= e["ts"] <= end]


def analyse(trace: dict) -> dict:
    """Busy and idle GPU time of the `IMAGE` annotation's window in a Chrome trace (torch.profiler's export), per
    phase: kernels are attributed to the innermost phase annotation around the host call that launched them, and a
    gap to the phase that launched the kernel ending it ("after the last kernel" when none does)."""
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    window = next(e for e in events if e.get("cat") == "user_annotation" and e["name"] == IMAGE)
    start, end = window["ts"], window["ts"] + window["dur"]
    phases = sorted((e for e in events if e.get("cat") == "user_annotation" and e["name"] != IMAGE
                     and start <= e["ts"] <= end), key=lambda e: e["ts"])
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    gpu = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
                  and start <= e["ts"] <= end), key=lambda e: e["ts"])

    def phase_at(ts: float) -> str:
        inner = [p for p in phases if p["ts"] <= ts <= p["ts"] + p["dur"]]
        return min(inner, key=lambda p: p["dur"])["name"] if inner else "pipeline"

    def launched_by(e: dict) -> str:
        launch = launches.get(e.get("args", {}).get("correlation"))
        return phase_at(launch["ts"]) if launch else "unknown"

    per = defaultdict(lambda: {"gpu_ms": 0.0, "idle_ms": 0.0, "spacing_ms": 0.0, "kernels": 0, "gaps": 0,
                               "syncs": 0, "sync_ms": 0.0})
    kinds = defaultdict(lambda: defaultdict(lambda: {"gpu_ms": 0.0, "kernels": 0}))  # phase -> kind -> summed time
    durations = defaultdict(list)  # (kernel, grid, kind, phase) -> durations (µs)
    busy, cursor, gaps = 0.0, start, []
    for e in gpu:
        phase, what = launched_by(e), kind(e)
        durations[(e["name"], str(e.get("args", {}).get("grid", "")), what, phase)].append(e["dur"])
        for where in (phase, "all"):
            kinds[where][what]["gpu_ms"] += e["dur"] / 1e3
            kinds[where][what]["kernels"] += 1
        s, f = max(e["ts"], cursor), min(e["ts"] + e["dur"], end)
        if e["ts"] > cursor:  # the GPU waited for this launch
            gap = e["ts"] - cursor
            per[phase]["idle_ms"] += gap / 1e3
            if gap < SPACING_US:  # the GPU's own kernel-to-kernel latency (inside a graph, on a busy stream)
                per[phase]["spacing_ms"] += gap / 1e3
            else:  # the host had not launched the work yet, or a copy was waiting for it
                per[phase]["gaps"] += 1
                gaps.append({"ms": gap / 1e3, "before": phase, "kernel": e["name"][:80],
                             "at_ms": (cursor - start) / 1e3})
        if f > s:
            busy += f - s
            per[phase]["gpu_ms"] += (f - s) / 1e3
        per[phase]["kernels"] += 1
        cursor = max(cursor, e["ts"] + e["dur"])
    if cursor < end:
        per["after the last kernel"]["idle_ms"] += (end - cursor) / 1e3
        per["after the last kernel"]["gaps"] += 1
        gaps.append({"ms": (end - cursor) / 1e3, "before": "after the last kernel", "kernel": "",
                     "at_ms": (cursor - start) / 1e3})
    for e in host_waits(events, start, end):  # the host waiting for the device, per phase
        waiting = per[phase_at(e["ts"])]
        waiting["syncs"] += 1
        waiting["sync_ms"] += e["dur"] / 1e3
    host = defaultdict(float)
    for p in phases:  # host time of each phase's outermost calls
        if not any(q is not p and q["ts"] <= p["ts"] and p["ts"] + p["dur"] <= q["ts"] + q["dur"] for q in phases):
            host[p["name"]] += p["dur"] / 1e3
    wall = (end - start) / 1e3
    spacing = sum(v["spacing_ms"] for v in per.values())
    return {"wall_ms": wall, "gpu_busy_ms": busy / 1e3, "gpu_idle_ms": wall - busy / 1e3, "gpu_spacing_ms": spacing,
            "phases": {k: dict(per[k], host_ms=host.get(k, 0.0)) for k in sorted(set(per) | set(host))},
            "kinds": {p: {k: dict(v) for k, v in sorted(ks.items())} for p, ks in sorted(kinds.items())},
            "largest_gaps": sorted(gaps, key=lambda g: -g["ms"])[:15],
            "top_kernels": [{"kernel": name, "grid": grid, "kind": what, "phase": phase, "calls": len(d),
                             "total_ms": sum(d) / 1e3, "median_us": statistics.median(d), "min_us": min(d), "max_us": max(d)}
                            for (name, grid, what, phase), d in sorted(durations.items(), key=lambda kv: -sum(kv[1]))
                            [:TOP_KERNELS]]}


@contextmanager
def labelled(pipe, cfg):
    """record_function labels on the pipeline's phases (module hooks and instance-level wrappers), removed after."""
    import torch

    from workbench.measure.cost import _stage_modules

    handles, open_ = [], {}

    def pre(name):
        def hook(module, args, kwargs):
            open_[name] = torch.profiler.record_function(name)
            open_[name].__enter__()
        return hook

    def post(name):
        def hook(module, args, output):
            open_.pop(name).__exit__(None, None, None)
        return hook

    for name, module in _stage_modules(pipe):
        handles.append(module.register_forward_pre_hook(pre(name), with_kwargs=True))
        handles.append(module.register_forward_hook(post(name)))
    wrapped = []

    def wrap(obj, attr, name):
        original = getattr(obj, attr)

        def call(*args, **kwargs):
            with torch.profiler.record_function(name):
                return original(*args, **kwargs)
        wrapped.append((obj, attr, obj.__dict__[attr] if attr in getattr(obj, "__dict__", {}) else None))
        setattr(obj, attr, call)

    from workbench import knobs
    from workbench.knobs import scheduler

    # the scheduler knob builds a new sampler every call: label the methods of the class it builds (its sync-free
    # subclass where it has one, whose set_timesteps is its own)
    sampler = scheduler.sync_free_sampler(scheduler.resolve(cfg.scheduler)[0])
    wrap(sampler, "step", "scheduler.step")
    wrap(sampler, "set_timesteps", "scheduler.set_timesteps")
    wrap(knobs, "call", "knobs.call")  # the call-time knobs: the scheduler built from the model's config, callbacks
    wrap(pipe, "prepare_latents", "prepare_latents")
    wrap(pipe, "encode_prompt", "encode_prompt")
    wrap(pipe.image_processor, "postprocess", "image_processor.postprocess")
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for obj, attr, original in reversed(wrapped):
            if original is None:
                delattr(obj, attr)  # inherited (or the class's method): found there again
            else:
                setattr(obj, attr, original)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sd15-random")
    p.add_argument("--rung", default="graphs all +cudnn", help="a benchmarks.gpu_ladder rung name")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="fp16")
    p.add_argument("--images", type=int, default=5, help="images profiled, one pipeline call each")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda", help="cuda; cpu checks the plumbing (no GPU timeline)")
    p.add_argument("--out", type=Path, default=Path("results/gpu-profile.json"))
    p.add_argument("--trace", type=Path, default=None, help="Chrome trace of the last image (default: beside --out)")
    p.add_argument("--analyse", type=Path, default=None,
                   help="analyse a saved Chrome trace (.json or .json.gz) of one image instead of profiling")
    args = p.parse_args()
    if args.analyse:
        import gzip

        opener = gzip.open if args.analyse.suffix == ".gz" else open
        with opener(args.analyse, "rt") as f:
            results = [analyse(json.load(f))]
        out = {"trace": str(args.analyse), **summary(results), "images": results}
        print(f"{args.analyse}: one image (under the profiler, which adds host time)")
        report(out)
        if args.out != p.get_default("out"):
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=1))
        return
    from benchmarks.gpu_ladder import rung_config

    try:  # before anything is built
        rung = rung_config(args.rung)
    except KeyError as err:
        p.error(f"--rung: {err.args[0]}")

    import torch
    from torch.profiler import ProfilerActivity, profile

    from workbench import knobs
    from workbench.config import TrialConfig
    from workbench.prompts import load_prompts, prompts_for
    from workbench.trial import build_pipeline, generate, plan

    cfg = TrialConfig.from_dict({"model": args.model, "steps": args.steps, "cfg_scale": 7.5, "scheduler": "dpm++2m",
                                 "precision": args.precision, "device": args.device, "batch_size": args.batch,
                                 "seeds": f"0-{args.batch - 1}", "quality": False, **rung})
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()
    knobs.check_device(cfg, device)
    pipe, _ = build_pipeline(cfg, device)
    pipe.set_progress_bar_config(disable=True)
    resolution = plan(cfg, pipe).resolution
    prompts = prompts_for(load_prompts(cfg.prompt_set), args.batch * (args.warmup + args.images))
    t0 = time.perf_counter()
    for i in range(args.warmup):  # compilation and CUDA graph recording
        generate(pipe, cfg, prompts[i * args.batch:(i + 1) * args.batch], list(range(args.batch)), resolution, device)
    sync()
    warmup_s = time.perf_counter() - t0
    trace = args.trace or args.out.with_suffix(".trace.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    with labelled(pipe, cfg):
        for i in range(args.warmup, args.warmup + args.images):
            batch = prompts[i * args.batch:(i + 1) * args.batch]
            with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda) as prof:
                with torch.profiler.record_function(IMAGE):
                    generate(pipe, cfg, batch, list(range(args.batch)), resolution, device)
                sync()
            prof.export_chrome_trace(str(trace))
            results.append(analyse(json.loads(trace.read_text())))
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "config": {k: str(v) for k, v in rung.items()},
           "device_name": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
           "warmup_s": warmup_s, **summary(results), "images": results, "trace": str(trace)}
    args.out.write_text(json.dumps(out, indent=1))
    print(f"{args.model} {args.rung!r}, batch {args.batch}, {args.steps} steps, {out['device_name']}: "
          f"{args.images} images profiled (medians; under the profiler, which adds host time)")
    report(out)


def summary(results: list[dict]) -> dict:
    """Medians over the profiled images: totals, and each phase's figures."""
    def medians(tables: list[dict], fields: tuple) -> dict:  # name -> field -> median over images (0 where absent)
        names = sorted({n for t in tables for n in t})
        return {n: {f: statistics.median(t.get(n, {}).get(f, 0.0) for t in tables) for f in fields} for n in names}

    kinds = [r.get("kinds", {}) for r in results]
    return {"median": {k: statistics.median(r.get(k, 0.0) for r in results)
                       for k in ("wall_ms", "gpu_busy_ms", "gpu_idle_ms", "gpu_spacing_ms")},
            "phases": medians([r["phases"] for r in results],
                              ("gpu_ms", "idle_ms", "spacing_ms", "host_ms", "kernels", "gaps", "syncs", "sync_ms")),
            "kinds": {p: medians([k.get(p, {}) for k in kinds], ("gpu_ms", "kernels"))
                      for p in sorted({p for k in kinds for p in k})}}


def report(out: dict) -> None:
    median, phases = out["median"], out["phases"]
    print(f"  wall {median['wall_ms']:.1f} ms = GPU busy {median['gpu_busy_ms']:.1f} ms + GPU idle "
          f"{median['gpu_idle_ms']:.1f} ms ({median['gpu_spacing_ms']:.1f} ms of it kernel-to-kernel spacing under "
          f"{SPACING_US:.0f} µs)")
    print(f"  {'phase':28s} {'GPU ms':>8s} {'waiting':>8s} {'spacing':>8s} {'host ms':>8s} {'kernels':>8s} "
          f"{'gaps':>6s} {'syncs':>6s} {'sync ms':>8s}")
    for n, v in sorted(phases.items(), key=lambda kv: -(kv[1]["idle_ms"] - kv[1]["spacing_ms"])):
        print(f"  {n:28s} {v['gpu_ms']:8.2f} {v['idle_ms'] - v['spacing_ms']:8.2f} {v['spacing_ms']:8.2f} "
              f"{v['host_ms']:8.2f} {v['kernels']:8.0f} {v['gaps']:6.0f} {v.get('syncs', 0):6.0f} "
              f"{v.get('sync_ms', 0.0):8.2f}")
    for where in ("all", "unet"):
        if out.get("kinds", {}).get(where):
            ks = out["kinds"][where]
            total = sum(v["gpu_ms"] for v in ks.values()) or 1.0
            print(f"  kernel time by kind ({'the image' if where == 'all' else 'UNet calls'}): " + ", ".join(
                f"{k} {v['gpu_ms']:.2f} ms ({100 * v['gpu_ms'] / total:.0f} %, {v['kernels']:.0f})"
                for k, v in sorted(ks.items(), key=lambda kv: -kv[1]["gpu_ms"])))
    busy = out["images"][-1]["gpu_busy_ms"] or 1.0
    print("  kernels of the last image that took the most time (total, % of GPU busy, calls x median (shortest-longest), "
          "grid, phase):")
    for k in out["images"][-1].get("top_kernels", [])[:12]:
        print(f"    {k['total_ms']:7.2f} ms {100 * k['total_ms'] / busy:5.1f} % {k['calls']:5d} x {k['median_us']:6.1f} µs "
              f"({k['min_us']:.1f}-{k['max_us']:.1f}) {k['grid']:>12s} {k['phase']:6s} {k['kernel'][:64]}")
    print("  largest gaps of the last image:", "; ".join(f"{g['ms']:.2f} ms before {g['kernel'][:40]} ({g['before']})"
                                                   for g in out["images"][-1]["largest_gaps"][:6]))


if __name__ == "__main__":
    main()
