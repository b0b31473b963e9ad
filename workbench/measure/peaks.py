"""Dense peak throughput of the GPUs we know, by the name `torch.cuda.get_device_name` reports, with its source.

    peak = peak_for("NVIDIA H100 80GB HBM3")     # Peak(part="H100 SXM5", ...); LookupError for an unknown GPU
    tflops, kind = peak.for_compute("fp16")       # (989.0, "fp16"); fp32 work is bounded by the TF32 peak

Figures are the vendors' datasheet numbers without 2:4 structured sparsity (the datasheets print the sparse
figure and say the dense one is half). int8 is in TOPS. A name matches one part only: an unknown or ambiguous
name is refused rather than guessed (an H100 NVL is neither the SXM nor the PCIe card).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

H100_DATASHEET = "NVIDIA H100 Tensor Core GPU datasheet (SXM / PCIe columns; sparse figures halved)"
H200_DATASHEET = "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM column; sparse figures halved)"
A100_DATASHEET = "NVIDIA A100 Tensor Core GPU datasheet (40GB / 80GB SXM columns; sparse figures halved)"
L4_DATASHEET = "NVIDIA L4 Tensor Core GPU datasheet (sparse figures halved)"
L40S_DATASHEET = "NVIDIA L40S datasheet (sparse figures halved)"


@dataclass(frozen=True)
class Peak:
    """One GPU part: dense tensor-core peaks per compute type (TFLOP/s; int8 in TOPS) and memory bandwidth."""
    part: str
    pattern: str                 # regular expression, matched in full against torch.cuda.get_device_name
    tflops: dict                 # "tf32" | "bf16" | "fp16" | "fp8" | "int8" -> dense peak
    memory_tb_s: float
    source: str

    def for_compute(self, compute: str) -> tuple[float, str]:
        """(peak, the peak's compute type) for work done in `compute`; fp32 is bounded by TF32 tensor cores.

        fp32 maps to TF32 because that is the fastest path fp32 work can take (cuDNN convolutions use TF32 by
        default; matmuls do when torch.backends.cuda.matmul.allow_tf32 is set): the bound, not a claim that
        every operation ran in TF32."""
        kind = "tf32" if compute in ("fp32", "tf32") else compute
        if kind not in self.tflops:
            raise LookupError(f"no {compute} peak known for {self.part}")
        return self.tflops[kind], kind


PEAKS: tuple[Peak, ...] = (
    Peak("H100 SXM5", r"NVIDIA H100 80GB HBM3",
         {"tf32": 494.5, "bf16": 989.0, "fp16": 989.0, "fp8": 1979.0, "int8": 1979.0}, 3.35, H100_DATASHEET),
    Peak("H100 PCIe", r"NVIDIA H100 PCIe",
         {"tf32": 378.0, "bf16": 756.0, "fp16": 756.0, "fp8": 1513.0, "int8": 1513.0}, 2.0, H100_DATASHEET),
    Peak("H200 SXM", r"NVIDIA H200",
         {"tf32": 494.5, "bf16": 989.0, "fp16": 989.0, "fp8": 1979.0, "int8": 1979.0}, 4.8, H200_DATASHEET),
    Peak("A100 SXM4 80GB", r"NVIDIA A100-SXM4-80GB",
         {"tf32": 156.0, "bf16": 312.0, "fp16": 312.0, "int8": 624.0}, 2.039, A100_DATASHEET),
    Peak("A100 SXM4 40GB", r"NVIDIA A100-SXM4-40GB",
         {"tf32": 156.0, "bf16": 312.0, "fp16": 312.0, "int8": 624.0}, 1.555, A100_DATASHEET),
    Peak("L4", r"NVIDIA L4",
         {"tf32": 60.0, "bf16": 121.0, "fp16": 121.0, "fp8": 242.5, "int8": 242.5}, 0.3, L4_DATASHEET),
    Peak("L40S", r"NVIDIA L40S",
         {"tf32": 183.0, "bf16": 362.05, "fp16": 362.05, "fp8": 733.0, "int8": 733.0}, 0.864, L40S_DATASHEET),
)


def peak_for(device_name: str) -> Peak:
    """The one part whose pattern matches the device name in full, or LookupError('no peak known for <name>')."""
    found = [p for p in PEAKS if re.fullmatch(p.pattern, device_name.strip())]
    if len(found) != 1:
        raise LookupError(f"no peak known for {device_name}")
    return found[0]
