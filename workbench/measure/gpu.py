"""What a CUDA row adds: achieved UNet TFLOP/s and its share of the device's dense peak, energy per image, the
allocator's peak reserved memory; on a CPU each is absent with its reason.

    metrics, protocols, absent = unet_throughput(pipe.unet, device, seconds, keys, timer.examples)
    metrics, protocols, absent = energy_per_image(meter, images)

Self-check of the energy counter on a GPU machine: `python -m workbench.measure.gpu --selfcheck`.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

import torch

from workbench.measure import unet_flops
from workbench.measure.energy import EnergyMeter, device_name, selfcheck
from workbench.measure.peaks import peak_for

THROUGHPUT = ("unet_tflops", "unet_roofline_pct")
COMPUTE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def unet_throughput(unet, device: torch.device, seconds: list[float], keys: list, examples: dict,
                    compute: str | None = None) -> tuple[dict, dict, dict]:
    """(metrics, protocols, absent): FLOPs of the timed UNet calls / the time spent in them, and % of dense peak.

    `seconds[i]` is the i-th timed call's time and `keys[i]` its input signature (cost.StageTimer); each distinct
    signature (the CFG batch 2B, and B after a CFG cutoff) is counted once on the meta device. `compute` is the
    precision the UNet's matmuls run in: by default its parameters' dtype; a quantised UNet passes "int8" or
    "fp8" to be held to those peaks."""
    if device.type != "cuda":
        reason = (f"device is a CPU ({device_name(device)}): achieved TFLOP/s and % of dense peak are measured on "
                  "CUDA devices only")
        return {}, {}, dict.fromkeys(THROUGHPUT, reason)
    if not keys or len(keys) != len(seconds):
        return {}, {}, dict.fromkeys(THROUGHPUT, "no timed UNet call")
    try:
        flops, per_call, method = unet_flops.count_calls(unet, keys, examples)
    except LookupError as err:
        return {}, {}, dict.fromkeys(THROUGHPUT, str(err))
    except Exception as err:  # noqa: BLE001 - a module the meta copy cannot run (e.g. quantised tensor subclasses)
        reason = f"the meta-device FLOP count failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        return {}, {}, dict.fromkeys(THROUGHPUT, reason)
    calls = Counter(keys)
    achieved = flops / sum(seconds) / 1e12
    name = device_name(device)
    protocol = {"device": name, "flops": f"torch FlopCounterMode, {method}, at each timed call's input shapes",
                "calls": [{"batch": _batch(examples[key]), "calls": n, "gflops_per_call": per_call[key] / 1e9}
                          for key, n in calls.items()],
                "time": "GPU time of each UNet call between CUDA events (StageTimer, no synchronisation inside a "
                        "batch), timed batches only, warm-up batch excluded",
                "tflops": f"{flops / 1e12:.4g} TFLOP over {sum(seconds):.4g} s in {len(seconds)} calls"}
    compute = compute or COMPUTE.get(_dtype(unet), str(_dtype(unet)))
    try:
        peak = peak_for(name)
        tflops, kind = peak.for_compute(compute)
    except LookupError as err:
        return {"unet_tflops": achieved}, {"unet_tflops": protocol}, {"unet_roofline_pct": str(err)}
    roofline = {**protocol, "peak_tflops": tflops, "peak_kind": f"dense {kind} tensor core", "part": peak.part,
                "source": peak.source, "unet_compute": compute}
    if compute == "fp32":
        roofline["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32,
                            "note": "fp32 work is held to the TF32 tensor-core peak, its fastest path"}
    return ({"unet_tflops": achieved, "unet_roofline_pct": 100 * achieved / tflops},
            {"unet_tflops": protocol, "unet_roofline_pct": roofline}, {})


def energy_per_image(meter: EnergyMeter, images: int) -> tuple[dict, dict, dict]:
    """(metrics, protocols, absent): joules the board drew over the timed batches, per image generated in them."""
    if meter.reason is not None or not images:
        return {}, {}, {"energy_j_per_image": meter.reason or "no timed batch"}
    if meter.joules <= 0:  # every region fell between two steps of the counter: 0 J would be a false reading
        return {}, {}, {"energy_j_per_image": (
            f"NVML's energy counter did not advance over {meter.regions} timed batches ({meter.seconds:.3g} s): "
            "shorter than its update interval (about 100 ms on the H100); time more or larger batches")}
    return {"energy_j_per_image": meter.joules / images}, {"energy_j_per_image": {
        "counter": "NVML nvmlDeviceGetTotalEnergyConsumption (whole board, mJ; steps about every 100 ms on the H100)",
        "device": device_name(meter.device), "nvml_device": meter.found_by,
        "region": "each timed batch, between device synchronisations; warm-up and image saving excluded",
        "batches": meter.regions, "seconds": meter.seconds, "images": images, "joules": meter.joules}}, {}


def reserved_memory(peak, device: torch.device) -> tuple[dict, dict, dict]:
    """(metrics, protocols, absent) of the CUDA caching allocator's peak reserved memory (cost.PeakMemory)."""
    if peak.reserved is None:
        return {}, {}, {"peak_reserved_mb": f"device is a CPU ({device_name(device)}): no CUDA caching allocator; "
                                            "peak_memory_mb holds the process's peak resident set"}
    return {"peak_reserved_mb": peak.reserved / 2**20}, {"peak_reserved_mb": {
        "kind": "cuda_max_reserved", "region": "warm-up and timed generation"}}, {}


def _dtype(unet) -> torch.dtype | None:
    module = getattr(unet, "_orig_mod", unet)
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def _batch(example) -> int | None:
    args, kwargs = example
    sample = args[0] if args else kwargs.get("sample")
    return int(sample.shape[0]) if isinstance(sample, torch.Tensor) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.measure.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--selfcheck", action="store_true", help="check NVML's energy counter rises under a matmul loop")
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    if not args.selfcheck:
        parser.print_help()
        return 2
    report = selfcheck(seconds=args.seconds)
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        try:
            report["peak"] = peak_for(name).__dict__
        except LookupError as err:
            report["peak"] = str(err)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
