"""The GPU ladder: eager -> channels_last + fused QKV -> compile -> CUDA graphs -> ..., every rung a workbench trial in
a fresh process (as a sweep's papermill kernel), on one model and batch size.

    python -m benchmarks.gpu_ladder --model sd15-random --batch 1 --out results/gpu-ladder-sd15-b1.json

Each rung runs `run_trial` with quality off and `timing_repeats` timed batches after one warm-up batch (which holds
the compilation), in its own process under a time limit (`--timeout`). Per rung: CFG step (median UNet call,
CUDA-synchronised), image latency (text encoder + steps + VAE decode, per image), compile_s, peak memory, and PSNR
of its images to the first rung's at the same seeds and prompts (random weights: PSNR measures numerical deviation,
which is what these knobs risk). Prints a table at the end and writes every row to `--out`. A rung's name followed
by " (2nd process)" runs it again in another fresh process (its own images folder): what the caches the first
wrote save the second.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RUNGS = {
    "eager": {},
    "+channels_last+fuse_qkv": {"channels_last": True, "fuse_qkv": True},
    "+compile default": {"channels_last": True, "fuse_qkv": True, "compile": "default"},
    "+CUDA graphs": {"channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead"},
    "+CUDA graphs +cudnn attn": {"channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead",
                                  "attention": "cudnn"},
    "+CUDA graphs +vae": {"channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead",
                          "compile_scope": "unet+vae"},
    "+CUDA graphs +int8wo": {"channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead",
                             "torchao": "int8-weight-only"},
    "+CUDA graphs +vae +cudnn attn": {"channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead",
                                      "compile_scope": "unet+vae", "attention": "cudnn"},
    "+CUDA graphs +int8dyn": {"channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead",
                              "torchao": "int8-dynamic"},
    "bf16 +compile blocks": {"channels_last": True, "fuse_qkv": True, "compile": "default", "compile_scope": "blocks",
                             "precision": "bf16"},
    "bf16 +compile blocks +fp8": {"channels_last": True, "fuse_qkv": True, "compile": "default",
                                  "compile_scope": "blocks", "precision": "bf16", "torchao": "fp8-dynamic-row"},
    "bf16 +CUDA graphs +vae +fp8": {"channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead",
                                    "compile_scope": "unet+vae", "precision": "bf16", "torchao": "fp8-dynamic-row"},
}
# Skipping work on top of the best runtime (CUDA graphs of UNet and VAE decoder): feature caching, token downsampling,
# the prompt cache, and how they compose with each other and the CFG cutoff (docs/skipping.md)
GRAPHS = {"channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead", "compile_scope": "unet+vae"}
ALL = {**GRAPHS, "compile_scope": "all"}  # the text encoders compiled too
TEXT = {**ALL, "compile_scope": "all-graphed", "cudnn_benchmark": True}  # their CUDA graphs too, cuDNN autotuned
CAPT = {**TEXT, "compile_scope": "all-captured"}  # their eager kernels as CUDA graphs, not compiled
BLOCKS = {"channels_last": True, "fuse_qkv": True, "compile": "default", "compile_scope": "blocks-captured",
          "cudnn_benchmark": True}  # regional Inductor kernels, every module recorded whole as CUDA graphs
LOOP = {"channels_last": True, "fuse_qkv": True, "compile": "default", "compile_scope": "loop-captured",
        "cudnn_benchmark": True}  # Inductor kernels, each call's steps and decode recorded as one CUDA graph
RUNGS.update({
    "graphs": GRAPHS,
    "graphs +cache3 d0": {**GRAPHS, "cache_interval": 3},
    "graphs +cache3 d1": {**GRAPHS, "cache_interval": 3, "cache_depth": 1},
    "graphs +cache5 d0": {**GRAPHS, "cache_interval": 5},
    "graphs +cache3 +cutoff0.5": {**GRAPHS, "cache_interval": 3, "cfg_cutoff": 0.5},
    "graphs +todo2": {**GRAPHS, "token_downsample": 2},
    "graphs +cache3 +todo2": {**GRAPHS, "cache_interval": 3, "token_downsample": 2},
    "graphs +prompt cache": {**GRAPHS, "prompt_cache": True},
    "graphs all": ALL,
    "graphs all +cache5 +todo2": {**ALL, "cache_interval": 5, "token_downsample": 2},
    "graphs all +cache3 +todo2 +prompt cache": {**ALL, "cache_interval": 3, "token_downsample": 2, "prompt_cache": True},
    "graphs all +cache5 +todo2 +prompt cache": {**ALL, "cache_interval": 5, "token_downsample": 2, "prompt_cache": True},
    "graphs all +cudnn": {**ALL, "cudnn_benchmark": True},
    "graphs all +tuned": {**ALL, "compile_tuning": "tuned"},
    "graphs all +tuned +cudnn": {**ALL, "compile_tuning": "tuned", "cudnn_benchmark": True},
    "bf16 compile": {"channels_last": True, "fuse_qkv": True, "compile": "default", "precision": "bf16"},
    "bf16 compile +fp8": {"channels_last": True, "fuse_qkv": True, "compile": "default", "precision": "bf16",
                          "torchao": "fp8-dynamic-row"},
    "bf16 graphs all": {**ALL, "precision": "bf16"},
    "bf16 graphs all +fp8": {**ALL, "precision": "bf16", "torchao": "fp8-dynamic-row"},
    "bf16 compile +fp8 tensor": {"channels_last": True, "fuse_qkv": True, "compile": "default", "precision": "bf16",
                                 "torchao": "fp8-dynamic-tensor"},
    # FP8 with activation scales calibrated once (no amax reduction per call), against `bf16 compile` / `bf16 graphs`
    "bf16 compile +fp8 static": {"channels_last": True, "fuse_qkv": True, "compile": "default", "precision": "bf16",
                                 "torchao": "fp8-static"},
    "bf16 graphs text +cudnn": {**TEXT, "precision": "bf16"},
    "bf16 graphs text +cudnn +fp8 static": {**TEXT, "precision": "bf16", "torchao": "fp8-static"},
    # an fp16 SDXL VAE: diffusers recasts it to fp32 and back around every decode (what a compiled decoder pays for)
    "graphs all +cudnn +vae fp32": {**ALL, "cudnn_benchmark": True, "vae_upcast": "fp32"},
    "graphs all +cudnn +vae fp16": {**ALL, "cudnn_benchmark": True, "vae_upcast": "off"},
    "bf16 graphs all +int8dyn": {**ALL, "precision": "bf16", "torchao": "int8-dynamic"},
    # one Inductor lever at a time (compile_tuning), and the text encoders' CUDA graphs (compile_scope all-graphed)
    "graphs all +cudnn +conv-mm": {**ALL, "cudnn_benchmark": True, "compile_tuning": "conv-mm"},
    "graphs all +cudnn +freezing": {**ALL, "cudnn_benchmark": True, "compile_tuning": "freezing"},
    "graphs all +cudnn +gemm-autotune": {**ALL, "cudnn_benchmark": True, "compile_tuning": "gemm-autotune"},
    "graphs text +cudnn": TEXT,
    "graphs text +cudnn +fusion": {**TEXT, "compile_tuning": "fusion"},
    # cuDNN's attention pinned alone refused these shapes ("No available kernel"): unfused, and the memory-efficient
    # kernel, beside PyTorch's default choice (cuDNN's fused kernel where it has one, docs/gpu.md)
    "graphs text +cudnn +cudnn attn unfused": {**TEXT, "attention": "cudnn", "fuse_qkv": False},
    "graphs text +cudnn +efficient attn": {**TEXT, "attention": "efficient"},
    "graphs text +cudnn +cache5": {**TEXT, "cache_interval": 5},
    "graphs all +cudnn +cache5": {**ALL, "cudnn_benchmark": True, "cache_interval": 5},
    "graphs text +cudnn +vae fp32": {**TEXT, "vae_upcast": "fp32"},
    "graphs text +cudnn +vae fp16": {**TEXT, "vae_upcast": "off"},
    # feature caching with graphed text encoders without cuDNN autotuning, and the 80 ms goal's composition on the
    # pinned device (docs/skipping.md)
    "graphs text +cache5": {**ALL, "compile_scope": "all-graphed", "cache_interval": 5},
    "graphs text +cudnn +cache5 +todo2": {**TEXT, "cache_interval": 5, "token_downsample": 2},
    # early stop's cost in a graphed loop: a tolerance no image reaches (the tracking alone) and one that stops
    "graphs text +cudnn +early stop tracking": {**TEXT, "early_stop_tol": 1e-9},
    "graphs text +cudnn +early stop 0.05": {**TEXT, "early_stop_tol": 0.05},
    "graphs text +cudnn +flash attn": {**TEXT, "attention": "flash"},
    # coordinate-descent tuning (diffusers' guide) across commands: each tuned Triton kernel's best config is cached
    # beside it as it is found, so a process cut short by the time limit leaves the next one less to tune
    "graphs text +cudnn +tuned": {**TEXT, "compile_tuning": "tuned"},
    "graphs text +cudnn +cache2 +todo2": {**TEXT, "cache_interval": 2, "token_downsample": 2},
    "graphs text +cudnn +cache5 +todo2 +early stop 0.05": {**TEXT, "cache_interval": 5, "token_downsample": 2,
                                                           "early_stop_tol": 0.05},
    # the samplers without their waits for the GPU (workbench.models.sync_free_sampler) against diffusers' own, which
    # `_diffusers_sampler` asks for (the probe then builds samplers without the subclass): same images, fewer waits
    "graphs text +cudnn dpm++ diffusers": {**TEXT, "_diffusers_sampler": True},
    "graphs text +cudnn unipc": {**TEXT, "scheduler": "unipc"},
    "graphs text +cudnn unipc diffusers": {**TEXT, "scheduler": "unipc", "_diffusers_sampler": True},
    # Dynamo's traced code cached too (compile_cache: precompile): what a fresh process's second compile still costs
    "graphs text +cudnn +precompile": {**TEXT, "compile_cache": "precompile"},
    "graphs +cudnn +vae fp32 +precompile": {**GRAPHS, "cudnn_benchmark": True, "vae_upcast": "fp32",
                                            "compile_cache": "precompile"},
    "graphs text +cudnn +vae fp32 +precompile": {**TEXT, "vae_upcast": "fp32", "compile_cache": "precompile"},
    # the text encoders' eager kernels captured as CUDA graphs, without Dynamo (compile_scope all-captured)
    "graphs captext +cudnn": CAPT,
    "graphs captext +cudnn +precompile": {**CAPT, "compile_cache": "precompile"},
    "graphs captext +cudnn +vae fp32 +precompile": {**CAPT, "vae_upcast": "fp32", "compile_cache": "precompile"},
    # regional compilation, then UNet, decoder and text encoders recorded whole as CUDA graphs (blocks-captured)
    "blocks captured +cudnn": BLOCKS,
    "blocks captured +cudnn +precompile": {**BLOCKS, "compile_cache": "precompile"},
    "blocks captured +cudnn +vae fp32 +precompile": {**BLOCKS, "vae_upcast": "fp32", "compile_cache": "precompile"},
    # each call after its prompt encoding recorded as one CUDA graph: steps, sampler and decode (loop-captured)
    "loop captured +cudnn": LOOP,
    "loop captured +cudnn +precompile": {**LOOP, "compile_cache": "precompile"},
    "loop captured +cudnn +vae fp32": {**LOOP, "vae_upcast": "fp32"},
    "loop captured +cudnn +vae fp32 +precompile": {**LOOP, "vae_upcast": "fp32", "compile_cache": "precompile"},
    "loop captured +cudnn +cache5": {**LOOP, "cache_interval": 5},
    # FP8 matmuls with activation scales calibrated once, inside the recorded call (bf16: torchao's FP8 weights)
    "bf16 loop captured +cudnn": {**LOOP, "precision": "bf16"},
    "bf16 loop captured +cudnn +fp8 static": {**LOOP, "precision": "bf16", "torchao": "fp8-static"},
    "bf16 loop captured +cudnn +vae fp32": {**LOOP, "precision": "bf16", "vae_upcast": "fp32"},
    "bf16 loop captured +cudnn +vae fp32 +fp8 static": {**LOOP, "precision": "bf16", "vae_upcast": "fp32",
                                                        "torchao": "fp8-static"},
    "eager +cache3": {"cache_interval": 3},
    "eager +todo2": {"token_downsample": 2},
})
SECOND = " (2nd process)"


def rung_config(name: str) -> dict:
    """The knobs of a rung by name; "<rung> (2nd process)" is <rung>'s. KeyError names the unknown rung."""
    base = name.removesuffix(SECOND)
    if base not in RUNGS:
        raise KeyError(f"no rung named {base!r}; the rungs are listed in benchmarks/gpu_ladder.py's RUNGS "
                       f"(any of them followed by {SECOND!r} runs it again in a fresh process)")
    return RUNGS[base]


PROBE = """
import json, os, sys, time
from workbench.trial import run_trial
if os.environ.get("WORKBENCH_LADDER_DIFFUSERS_SAMPLER"):  # diffusers' sampler as it is, for the comparison
    import workbench.knobs.scheduler as knob
    knob.sync_free_sampler = lambda cls: cls
t0 = time.perf_counter()
row = run_trial(json.loads(sys.argv[1]), artifacts_dir=sys.argv[2], progress=False)
import torch._dynamo.utils as u
names, seconds = u.compile_times(repr="csv", aggregate=True)  # Dynamo/AOT/Inductor phases of every compile
phases = {n: float(s) for n, s in zip(names, seconds) if float(s) >= 0.05}
hits = {k: dict(u.counters[k]) for k in ("inductor", "aot_autograd") if u.counters[k]}
print("ROW " + json.dumps({"metrics": row["metrics"], "absent": row["absent"], "timings": row["timings"],
                          "compile_phases_s": phases, "cache_counters": hits,
                          "protocols": {k: v for k, v in row["protocols"].items() if k in ("compile", "compile_precompile_save", "compile_captured_graphs", "torchao", "feature_cache", "tokens")},
                          "process_s": time.perf_counter() - t0, "images": row["artifacts"]["images"]}))
"""


def psnr_to(images_dir: str, reference_dir: str, seeds: list[int]) -> float | None:
    """Mean PSNR (dB) of a rung's images to the reference rung's at the same seeds."""
    from workbench.images import load_images
    from workbench.measure.fidelity import per_image

    values = per_image(load_images(Path(images_dir), seeds), load_images(Path(reference_dir), seeds))["psnr"]
    return float(values.float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sd15-random")
    p.add_argument("--batch", type=int, default=1, help="images per pipeline call")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--images", type=int, default=8, help="images per rung (seeds 0..N-1)")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--rungs", default=",".join(RUNGS), help="comma-separated rung names (default: all)")
    p.add_argument("--timeout", type=int, default=240, help="seconds per rung process")
    p.add_argument("--reference", type=Path, help="images folder PSNR is measured to (default: the first rung's)")
    p.add_argument("--out", type=Path, default=Path("results/gpu-ladder.json"))
    args = p.parse_args()
    base = {"model": args.model, "steps": args.steps, "cfg_scale": 7.5, "scheduler": "dpm++2m",
            "precision": args.precision, "device": "cuda", "batch_size": args.batch, "seeds": f"0-{args.images - 1}",
            "quality": False, "timing_repeats": 5}
    work = args.out.with_suffix("")
    results, reference = [], None
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every rung: a command cut short by its time limit keeps what it measured
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": results}, indent=1))

    names = [r for r in args.rungs.split(",") if r]
    try:  # every name checked before the first rung's minutes
        configs = [rung_config(name) for name in names]
    except KeyError as err:
        p.error(f"--rungs: {err.args[0]}")
    if args.reference is not None:  # and the reference's images, which every rung's PSNR reads
        from workbench.images import image_name

        missing = [image_name(s) for s in range(args.images) if not (args.reference / image_name(s)).is_file()]
        if missing:
            p.error(f"--reference: {args.reference} lacks {missing[0]} (of seeds 0-{args.images - 1}); give the "
                    "images folder of an earlier rung with as many images, as its row's 'images' names it "
                    "(<out without .json>/<rung>/images)")
    for name, knobs in zip(names, configs):
        cfg = {**base, **knobs}
        env = dict(os.environ, **({"WORKBENCH_LADDER_DIFFUSERS_SAMPLER": "1"} if cfg.pop("_diffusers_sampler", False)
                                  else {}))
        t0 = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cfg), str(work / name.replace(" ", "_"))],
                                  capture_output=True, text=True, timeout=args.timeout, env=env)
        except subprocess.TimeoutExpired:
            results.append({"rung": name, "config": cfg, "error": f"timed out after {args.timeout} s"})
            print(f"{name}: timed out after {args.timeout} s", flush=True)
            continue
        if done.returncode != 0 or "ROW " not in done.stdout:
            lines = (done.stderr or done.stdout).strip().splitlines()
            errors = [line for line in lines if "Error" in line or "error:" in line][-2:]  # the exception's own line
            results.append({"rung": name, "config": cfg, "error": " | ".join(errors + lines[-3:])[-1200:]})
            print(f"{name}: failed: {results[-1]['error']}", flush=True)
            continue
        row = json.loads(done.stdout.split("ROW ", 1)[1].splitlines()[0])
        reference = reference or (str(args.reference) if args.reference else row["images"])
        row.update(rung=name, config=cfg, wall_s=time.perf_counter() - t0)
        try:  # the rung's timings are kept whatever happens to its comparison
            row["psnr_to_first"] = psnr_to(row["images"], reference, list(range(args.images)))
        except (OSError, ValueError) as err:
            row["psnr_to_first"], row["psnr_error"] = float("nan"), f"{type(err).__name__}: {err}"[:300]
            print(f"{name}: PSNR to {reference} failed ({row['psnr_error']}); its timings are kept", flush=True)
        results.append(row)
        m = row["metrics"]
        print(f"{name}: step {m.get('unet_step_s', float('nan')) * 1e3:.2f} ms, image {m['latency_s'] * 1e3:.1f} ms, "
              f"compile {m.get('compile_s', 0):.1f} s, UNet calls {m.get('unet_calls', 0):.0f} "
              f"(full {m.get('unet_full_fraction', 1):.2f}), PSNR {row['psnr_to_first']:.1f} dB, process {row['process_s']:.0f} s",
              flush=True)
        precompiled = row["protocols"].get("compile", {}).get("precompile")
        if precompiled:
            print(f"  precompile: {precompiled['loaded']} at build ({m.get('compile_load_s', 0):.1f} s), "
                  f"{row['protocols']['compile_precompile_save']['entries_written']} entries written after "
                  f"({m.get('precompile_save_s', 0):.1f} s){'; ' + '; '.join(precompiled['notes']) if precompiled['notes'] else ''}",
                  flush=True)
        if row["compile_phases_s"]:
            top = sorted(row["compile_phases_s"].items(), key=lambda kv: -kv[1])[:6]
            print("  compile phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in top), flush=True)
        save()
    save()
    print(f"\n{args.model}, batch {args.batch}, {args.steps} steps, {args.precision}, {args.images} images a rung")
    print(f"{'rung':32s} {'CFG step ms':>11s} {'image ms':>9s} {'compile s':>9s} {'peak MiB':>9s} {'PSNR dB':>8s} "
          f"{'TFLOP/s':>8s} {'% peak':>7s} {'J/image':>8s}")
    for r in results:
        if "error" in r:
            print(f"{r['rung']:32s} {r['error'][:80]}")
            continue
        m = r["metrics"]
        print(f"{r['rung']:32s} {m.get('unet_step_s', float('nan')) * 1e3:11.2f} {m['latency_s'] * 1e3:9.1f} "
              f"{m.get('compile_s', 0.0):9.1f} {m.get('peak_memory_mb', float('nan')):9.0f} {r['psnr_to_first']:8.1f} "
              f"{m.get('unet_tflops', float('nan')):8.1f} {m.get('unet_roofline_pct', float('nan')):7.1f} "
              f"{m.get('energy_j_per_image', float('nan')):8.1f}")


if __name__ == "__main__":
    main()
