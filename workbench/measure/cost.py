"""Cost measurement, all in one place: per-stage timing, peak memory, FLOPs, parameters and size.

Conventions (REFERENCE.md): warm-up excluded from timings and reported as its own column, device synchronised
around every timed region, medians and spread over repeats, peak memory reset before and read after the work.
"""
from __future__ import annotations

import statistics
import time
import weakref
from contextlib import contextmanager

import torch
from torch.utils._pytree import tree_flatten, tree_map  # no public pytree in torch 2.13; FlopCounterMode uses it too

# stage -> the pipeline modules it times (those present): SDXL's second text encoder belongs to the text-encoder stage
STAGES = {"text_encoder": ("text_encoder", "text_encoder_2"), "unet": ("unet",), "vae_decode": ("vae.decoder",)}
COMPONENTS = ("text_encoder", "text_encoder_2", "unet", "vae")  # what parameters and size count (those present)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_RECORDING: list[list] = []  # stage events of the CUDA graphs being recorded now (innermost last)
_TIMERS: weakref.WeakSet = weakref.WeakSet()  # live stage timers, told of every replay of a recorded graph


@contextmanager
def stage_events():
    """Around the recording of a CUDA graph (`workbench.knobs._captured`): a stage module called inside it records
    its timing events into the graph (external events, which every replay records again), listed in the list this
    yields as (stage, signature, meta example, start, end). Pass the list to `replaying`/`replayed` around each
    replay, and the stage timers time the stages inside the graph as they time eager ones."""
    events: list = []
    _RECORDING.append(events)
    try:
        yield events
    finally:
        _RECORDING.pop()


def replaying(events: list) -> None:
    """Before a replay records these events again: a timer still holding their last times reads them first."""
    for timer in list(_TIMERS) if events else ():
        timer._settle(events)


def replayed(events: list) -> None:
    """After a replay: its stages ran once more, as each enabled timer now counts."""
    for timer in list(_TIMERS) if events else ():
        timer._replayed(events)


class _WallEvent:
    """A stage event inside a recording on a CPU (tests): the host's clock when recorded."""

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end) -> float:
        return (end.t - self.t) * 1e3


def _graph_event(device: torch.device):
    event = torch.cuda.Event(enable_timing=True, external=True) if device.type == "cuda" else _WallEvent()
    event.record()
    return event


class StageTimer:
    """Times every forward of the pipeline's text encoder(s), UNet and VAE decoder through module hooks (a stage's
    modules run one after another, so SDXL's two text encoders are two calls of the text-encoder stage).

    On CUDA each call is bracketed by CUDA events and nothing synchronises inside the batch: the host keeps
    launching ahead as it would untimed (synchronising around every UNet call once cost a CUDA-graph replay most of
    its gain), and a call's time is the GPU time between its events, read when `calls` is. On a CPU it is the wall
    time of the call. Beside each call's time, `inputs[stage]` holds its input signature (shapes, dtypes, other
    arguments) and `examples[signature]` those arguments as meta tensors: what a FLOP count of the calls made needs
    (workbench.measure.unet_flops), recorded before the timed interval starts.
    A stage called inside the recording of a CUDA graph (`stage_events`) records external events into the graph
    instead, enabled or not; each replay of that graph then counts its stages' calls, with the times the replay's
    events took (`replayed`)."""

    def __init__(self, pipe, device: torch.device):
        self.device, self.handles = device, []
        self.events = device.type == "cuda"
        self._calls: dict[str, list] = {name: [] for name in STAGES}
        self.inputs: dict[str, list] = {name: [] for name in STAGES}
        self.examples: dict = {}
        self.enabled = False
        for name, module in _stage_modules(pipe):
            self.handles.append(module.register_forward_pre_hook(self._start(name), with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._stop(name)))
        self._t0: dict[str, object] = {}
        self._g0: dict[str, tuple] = {}  # stage -> (signature, example, start event) inside a recording
        _TIMERS.add(self)

    def _start(self, name):
        def hook(module, args, kwargs):
            if not (_RECORDING or self.enabled):
                return
            key = signature(args, kwargs)
            if _RECORDING:  # inside a CUDA graph being recorded: events the graph records on every replay
                self._g0[name] = (key, self.examples.get(key) or on_meta(args, kwargs), _graph_event(self.device))
                return
            if key not in self.examples:
                self.examples[key] = on_meta(args, kwargs)
            self.inputs[name].append(key)
            if self.events:
                self._t0[name] = torch.cuda.Event(enable_timing=True)
                self._t0[name].record()
            else:
                self._t0[name] = time.perf_counter()
        return hook

    def _stop(self, name):
        def hook(module, args, output):
            if _RECORDING and name in self._g0:
                _RECORDING[-1].append((name, *self._g0.pop(name), _graph_event(self.device)))
            elif self.enabled:
                start = self._t0.pop(name)
                if self.events:
                    end = torch.cuda.Event(enable_timing=True)
                    end.record()
                    self._calls[name].append((start, end))
                else:
                    self._calls[name].append(time.perf_counter() - start)
        return hook

    @property
    def calls(self) -> dict[str, list[float]]:
        """Seconds of every call per stage since the last reset (CUDA: waits for the last event, once)."""
        if not self.events:
            return self._calls
        if any(isinstance(c, tuple) for calls in self._calls.values() for c in calls):
            torch.cuda.synchronize(self.device)
        return {name: [c if isinstance(c, float) else c[0].elapsed_time(c[1]) / 1e3 for c in calls]
                for name, calls in self._calls.items()}

    def _replayed(self, events: list) -> None:
        if not self.enabled:
            return
        for name, key, example, start, end in events:
            self.examples.setdefault(key, example)
            self.inputs[name].append(key)
            self._calls[name].append((start, end) if self.events else start.elapsed_time(end) / 1e3)

    def _settle(self, events: list) -> None:
        """Read the times of pending calls whose events the next replay records again (one synchronisation)."""
        again = {id(e) for _, _, _, start, end in events for e in (start, end)}
        if any(isinstance(c, tuple) and id(c[0]) in again for calls in self._calls.values() for c in calls):
            self._calls = self.calls

    def reset(self) -> None:
        self._calls = {name: [] for name in STAGES}
        self.inputs = {name: [] for name in STAGES}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        _TIMERS.discard(self)


def signature(args, kwargs) -> tuple:
    """A hashable description of a call's arguments: tensors by shape and dtype, everything else by repr."""
    leaves, spec = tree_flatten((args, kwargs))
    return str(spec), tuple((tuple(x.shape), str(x.dtype)) if isinstance(x, torch.Tensor) else repr(x)
                            for x in leaves)


def on_meta(args, kwargs):
    """The call's arguments with every tensor replaced by an empty one of its shape and dtype on the meta device."""
    return tree_map(lambda x: torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x,
                    (args, kwargs))


@contextmanager
def timed(device: torch.device, out: list[float]):
    """Append the wall time of the block (device synchronised at both ends) to `out`."""
    _sync(device)
    t0 = time.perf_counter()
    yield
    _sync(device)
    out.append(time.perf_counter() - t0)


def interleaved(calls: list, rounds: int, device: torch.device, progress=None) -> list[list[float]]:
    """Seconds of every call in each of `rounds` rounds, the order reversed every other round (A B, B A, A B, ...).

    Both are timed back to back in the same process and warm state, so load that comes and goes on a shared
    machine falls on both alike, and alternating the order cancels what running first or second does (a
    crossover design). The caller warms every call up first; `progress` is called after each round."""
    times = []
    for r in range(rounds):
        order = range(len(calls)) if r % 2 == 0 else reversed(range(len(calls)))
        row = [0.0] * len(calls)
        for i in order:
            took: list[float] = []
            with timed(device, took):
                calls[i](r)
            row[i] = took[0]
        times.append(row)
        if progress:
            progress()
    return times


class PeakMemory:
    """Peak memory of a region: CUDA allocator peak (and the peak it reserved), or on CPU the process's peak
    resident set (VmHWM).

    On Linux the VmHWM high-water mark is reset by writing 5 to /proc/self/clear_refs, so the CPU figure is
    the peak of the measured work, not of the whole process lifetime.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss"
        self.bytes: int | None = None
        self.reserved: int | None = None  # CUDA: the caching allocator's peak reserved (what the GPU gave the process)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.kind = "cpu_peak_rss"
            except OSError:
                self.kind = "cpu_peak_rss_process_lifetime"
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))
            self.reserved = int(torch.cuda.max_memory_reserved(self.device))
        else:
            self.bytes = _vm_hwm_bytes()


def _vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def summary(values: list[float]) -> dict[str, float]:
    """Median and spread (interquartile range, min, max) of repeated timings, in seconds."""
    if not values:
        return {}
    qs = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "iqr": qs[2] - qs[0], "min": min(values), "max": max(values),
            "n": len(values)}


def parameter_counts(pipe) -> dict[str, int]:
    """Parameters per component; an ONNX Runtime component counts the weights of its graph."""
    counts = {name: sum(p.numel() for p in module.parameters()) +
              sum(m.onnx_params for m in module.modules() if hasattr(m, "onnx_params"))
              for name, module in _components(pipe)}
    counts["total"] = sum(counts.values())
    return counts


def model_bytes(pipe) -> int:
    """Bytes of all weights and buffers at their current dtype (the in-memory model size); an ONNX Runtime
    component counts its graph's weights as ONNX Runtime holds them (INT8 for quantised layers)."""
    return sum(t.numel() * t.element_size() for _, module in _components(pipe)
               for t in list(module.parameters()) + list(module.buffers())) + \
        sum(m.weight_bytes for _, module in _components(pipe) for m in module.modules() if hasattr(m, "weight_bytes"))


def onnx_components(pipe) -> list[str]:
    """The pipeline's components that run in ONNX Runtime."""
    return list(dict.fromkeys(name for name, module in _stage_modules(pipe)
                              if any(hasattr(m, "onnx_params") for m in module.modules())))


def _components(pipe) -> list[tuple[str, torch.nn.Module]]:
    return [(name, getattr(pipe, name)) for name in COMPONENTS if getattr(pipe, name, None) is not None]


def _stage_modules(pipe) -> list[tuple[str, torch.nn.Module]]:
    """(stage, module) for every module of every stage the pipeline has."""
    out = []
    for name, module_paths in STAGES.items():
        for path in module_paths:
            module = pipe
            for attr in path.split("."):
                module = getattr(module, attr, None)
            if module is not None:
                out.append((name, module))
    return out


@contextmanager
def count_flops(out: dict):
    """Count FLOPs of the block with torch's FlopCounterMode (matmuls and convolutions); total into out['flops']."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        yield
    out["flops"] = int(counter.get_total_flops())
