"""GPU energy from NVML's total energy counter (nvmlDeviceGetTotalEnergyConsumption: millijoules since the driver
loaded, Volta and later), summed over measured regions.

    with EnergyMeter(device) as meter:            # meter.reason says why there is no counter (CPU, no pynvml, ...)
        with meter.region():
            run_timed_batch()
    joules = meter.joules

The counter is the whole board's (every process on the GPU, idle power included) and moves in steps: on the lent
H100 (driver with CUDA 13, 2026-11-25) it changed about every 100 ms. One region's reading is therefore off by up
to a step, but the errors do not pile up: eight 0.3 s matmul regions summed to within 1.4 % of a 3 s window's
power x their busy time (0.6 s regions: 0.3 %), while waiting for the next step at both ends overshot by 8-14 %.
Read it around synchronised work, over several regions; over regions shorter than a step in all the counter may
not move (a 48 ms region read 0 J on the H100), which the row records as absent, not as 0 J.
The device torch uses is found in NVML by its UUID (torch's `uuid` lacks NVML's "GPU-" prefix), then its PCI bus
id, then its index through CUDA_VISIBLE_DEVICES (NVML numbers GPUs in PCI order, CUDA fastest-first unless
CUDA_DEVICE_ORDER=PCI_BUS_ID).
"""
from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager

import torch


def device_name(device: torch.device) -> str:
    """What the device calls itself: torch's CUDA name, or the CPU's processor string."""
    if device.type == "cuda":
        try:
            return torch.cuda.get_device_name(device)
        except (AssertionError, RuntimeError):  # a CUDA device named where torch has no CUDA
            return str(device)
    return platform.processor() or platform.machine()


class EnergyMeter:
    """Joules the GPU board drew inside `region()` blocks; `reason` is set (and joules stay None) when it cannot."""

    def __init__(self, device: torch.device):
        self.device, self.joules, self.regions, self.seconds = device, None, 0, 0.0
        self.nvml, self.handle, self.found_by, self.reason = None, None, None, None
        if device.type != "cuda":
            self.reason = (f"device is a CPU ({device_name(device)}): NVML's energy counter exists only on NVIDIA "
                           "GPUs")
            return
        self.nvml, self.handle, self.found_by, self.reason = open_counter(device)
        if self.reason is None:
            self.joules = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass
            self.nvml = None

    @contextmanager
    def region(self):
        """Add the counter's change over the block (the caller synchronises the device at both ends)."""
        if self.reason is not None:
            yield
            return
        start, t0 = self._read(), time.perf_counter()
        yield
        end, t1 = self._read(), time.perf_counter()
        if self.reason is None:
            self.joules += (end - start) / 1e3
            self.regions += 1
            self.seconds += t1 - t0

    def _read(self) -> int:
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except self.nvml.NVMLError as err:  # counters can fail mid-run (driver reset, GPU lost): say so once
            self.reason, self.joules = f"NVML energy counter failed during the run: {err}", None
            return 0


def open_counter(device: torch.device):
    """(pynvml, handle, how the handle was found, None) or (None, None, None, reason) for this CUDA device."""
    try:
        import pynvml  # heavy: optional (nvidia-ml-py), only on GPU machines
    except ImportError:
        return None, None, None, "nvidia-ml-py is not installed (pip install nvidia-ml-py): no NVML energy counter"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        return None, None, None, f"NVML is not available: {err}"
    try:
        handle, found_by = _handle(pynvml, device.index if device.index is not None else torch.cuda.current_device())
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as err:
        pynvml.nvmlShutdown()
        what = "is not supported" if isinstance(err, getattr(pynvml, "NVMLError_NotSupported", ())) else "failed"
        return None, None, None, (f"NVML's energy counter {what} on {device_name(device)} ({err}; it needs a Volta "
                                  "or later GPU)")
    return pynvml, handle, found_by, None


def _handle(pynvml, index: int):
    """NVML's handle of torch's CUDA device `index`: by UUID, else PCI bus id, else CUDA_VISIBLE_DEVICES' entry."""
    try:
        props = torch.cuda.get_device_properties(index)
    except (AssertionError, RuntimeError):  # no CUDA in this torch: only the index is left
        props = None
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"), \
                "uuid"
        except pynvml.NVMLError:
            pass
    if props is not None and hasattr(props, "pci_bus_id"):
        bus = f"{getattr(props, 'pci_domain_id', 0):08X}:{props.pci_bus_id:02X}:{getattr(props, 'pci_device_id', 0):02X}.0"
        try:
            return pynvml.nvmlDeviceGetHandleByPciBusId(bus), f"pci bus id {bus}"
        except pynvml.NVMLError:
            pass
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    entry = visible[index] if index < len(visible) else str(index)
    if entry.isdigit():
        return pynvml.nvmlDeviceGetHandleByIndex(int(entry)), f"NVML index {entry} (CUDA_VISIBLE_DEVICES)"
    return pynvml.nvmlDeviceGetHandleByUUID(entry), f"uuid {entry} (CUDA_VISIBLE_DEVICES)"



def selfcheck(device: torch.device | None = None, seconds: float = 1.0) -> dict:
    """Read the counter `seconds` apart, idle and then under a bf16 matmul loop: a working counter rises under load.

    Run on a GPU machine as `python -m workbench.measure.gpu --selfcheck`."""
    if not torch.cuda.is_available():
        return {"ok": False, "reason": "no CUDA device visible to torch"}
    device = device or torch.device("cuda", torch.cuda.current_device())
    with EnergyMeter(device) as meter:
        if meter.reason is not None:
            return {"ok": False, "reason": meter.reason}
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with meter.region():
            time.sleep(seconds)
        idle_s, idle_j = time.perf_counter() - t0, meter.joules
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        a = torch.randn(8192, 8192, device=device, dtype=dtype)
        (a @ a).sum().item()  # warm-up: cuBLAS handle and kernel choice
        n, t0 = 0, time.perf_counter()
        with meter.region():
            while time.perf_counter() - t0 < seconds:
                for _ in range(10):
                    a @ a
                torch.cuda.synchronize(device)
                n += 10
        busy_s, busy_j = time.perf_counter() - t0, meter.joules - idle_j
    return {"ok": busy_j > 0, "device": device_name(device), "found_by": meter.found_by,
            "idle_j": idle_j, "idle_w": idle_j / idle_s, "busy_j": busy_j, "busy_w": busy_j / busy_s,
            "busy_s": busy_s, "matmuls": n, "matmul_tflops": 2 * 8192 ** 3 * n / busy_s / 1e12, "dtype": str(dtype)}
