"""A module's eager forward replayed from CUDA graphs, captured without Dynamo (PyTorch's whole-network capture).

    capture(encoder, "text_encoder")           # its forward: a CUDA graph per input signature, captured at first call
    encoder(ids, output_hidden_states=True)    # later calls: inputs copied in, graph replayed, outputs copied out

`compile_scope: all-graphed` replays the text encoders from CUDA graphs too, but reaches them through torch.compile,
whose tracing of transformers' code every fresh process pays again (SDXL: 18.7-28.1 s of Dynamo tracing in a second
compile of 31.8-47.5 s on an H100, docs/gpu.md). A text encoder at 77 tokens is bound by its kernel launches, not by
its kernels, so graphing its eager kernels takes most of what compiling them gave, for the cost of one capture. The
recipe is the CUDA-graph section of PyTorch's CUDA semantics notes ("Whole-network capture"): warm up on a side
stream, capture with `torch.cuda.graph`, then copy new inputs into the captured ones and replay. Graphs of one module
share one memory pool; each replay's outputs are cloned out, since the next replay writes over them (a prompt's
conditional and unconditional encodings are two replays of one graph).
"""
from __future__ import annotations

import contextlib

_PLAIN = [0]  # how many `plain()` contexts are open


@contextlib.contextmanager
def plain():
    """Inside, every recorded forward and recorded pipeline call runs its eager code instead of a replay. A replay
    runs no operator torch can see, so torch's FlopCounterMode counting through one would count nothing."""
    _PLAIN[0] += 1
    try:
        yield
    finally:
        _PLAIN[0] -= 1


def running_plain() -> bool:
    return _PLAIN[0] > 0


class CaptureError(RuntimeError):
    """The forward did something a CUDA graph cannot hold (a host sync, a CPU tensor, an allocation it frees)."""


class CapturedForward:
    """Callable in place of a module's forward: one CUDA graph per signature (tensor shapes, dtypes, devices and the
    other arguments' values), captured at its first call."""

    def __init__(self, forward, name: str = "forward", warmup: int = 2, scope: str = "all-captured",
                 instead: str = "all-graphed"):
        self.forward = forward
        self.name = name  # what the error names
        self.scope, self.instead = scope, instead  # the compile scope recording it, and the one to use if it cannot
        self.warmup = warmup  # eager calls on a side stream before a capture (cuBLAS workspaces, lazy inits)
        self.graphs: dict = {}  # signature -> (replay, captured inputs, captured output leaves, output spec, stage events)
        self.pool = None  # one memory pool for every graph of this forward (torch.cuda.graph_pool_handle)
        self.replays = 0

    def __deepcopy__(self, memo):
        """A copy of the module records its own graphs (the forward bound to the copy; no graph, pool or buffer of
        this one's is shared)."""
        import copy

        return CapturedForward(copy.deepcopy(self.forward, memo), self.name, self.warmup, self.scope, self.instead)

    def __call__(self, *args, **kwargs):
        if running_plain():
            return self.forward(*args, **kwargs)
        import torch  # heavy
        from torch.utils._pytree import tree_flatten, tree_unflatten  # no public pytree in torch 2.13

        leaves, spec = tree_flatten((args, kwargs))
        key = (spec, tuple((tuple(x.shape), x.dtype, x.device) if isinstance(x, torch.Tensor) else x for x in leaves))
        if key not in self.graphs:
            self.graphs[key] = self._capture(leaves, spec)
        from workbench.measure import cost  # heavy: torch

        replay, inputs, outputs, out_spec, events = self.graphs[key]
        for static, new in zip(inputs, (x for x in leaves if isinstance(x, torch.Tensor))):
            static.copy_(new)
        cost.replaying(events)
        replay()
        cost.replayed(events)  # stages timed inside the graph (a recorded pipeline call's UNet and decoder)
        self.replays += 1
        return tree_unflatten([x.clone() if isinstance(x, torch.Tensor) else x for x in outputs], out_spec)

    def _capture(self, leaves, spec):
        """One graph of the forward on these arguments (cloned: they become the graph's inputs)."""
        import torch  # heavy
        from torch.utils._pytree import tree_flatten, tree_unflatten

        leaves = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]
        args, kwargs = tree_unflatten(leaves, spec)
        replay, (out, events) = self._record(lambda: self.forward(*args, **kwargs))
        outputs, out_spec = tree_flatten(out)
        return replay, [x for x in leaves if isinstance(x, torch.Tensor)], outputs, out_spec, events

    @staticmethod
    def _recording(run):
        """`run` as it is recorded: its outputs, and the stage events recorded inside it (`cost.stage_events`)."""
        from workbench.measure import cost  # heavy: torch

        with cost.stage_events() as events:
            out = run()
        return out, events

    def _record(self, run):
        """Warm `run` up on a side stream, capture it into this forward's pool: the graph's replay, and what
        `_recording` returned while it was captured."""
        import torch  # heavy

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                out = self._recording(run)
        except RuntimeError as err:  # torch names the operation a capture cannot hold
            raise CaptureError(f"compile_scope: {self.scope} could not record {self.name} as a CUDA graph "
                               f"({str(err).splitlines()[0]}); use compile_scope: {self.instead}") from err
        return graph.replay, out


def capture(module, name: str, scope: str = "all-captured", instead: str = "all-graphed") -> CapturedForward:
    """Replace `module`'s forward (an instance attribute, which nn.Module's call prefers) by its captured replays;
    the module's attributes, hooks and parameters stay as they were."""
    captured = CapturedForward(module.forward, name, scope=scope, instead=instead)
    module.forward = captured
    return captured
