"""Compile knob: `torch.compile` of the UNet (and optionally the VAE decoder), with its mode and scope.

Modes are torch's: `default` (Inductor kernels), `max-autotune-no-cudagraphs` (autotuned matmul and convolution
choices), `reduce-overhead` (Inductor kernels replayed as CUDA graphs: the launch gaps of a 20-step loop go away).
Scopes: `unet`, `unet+vae` (also the VAE decoder), `all` (also the text encoders, with Inductor kernels but not
CUDA graphs; graph breaks allowed there), `all-graphed` (`all` with the text encoders replayed as CUDA graphs too:
a prompt's conditional and unconditional encodings are two replays of one graph and the second would overwrite the
first's outputs in the graph's memory pool, so a forward hook copies each encoding out; reduce-overhead only),
`all-captured` (`unet+vae` compiled, and the text encoders' eager kernels captured as CUDA graphs with
`torch.cuda.graph`, without Dynamo: a fresh process pays one capture instead of tracing transformers' code again;
CUDA only, `workbench.knobs._captured`), `blocks` (diffusers' regional compilation, `compile_repeated_blocks`: each
transformer block compiled once and reused, much shorter compile), `blocks-captured` (`blocks`, then the whole UNet
call, the VAE decoder and the text encoders each recorded as CUDA graphs with `torch.cuda.graph`: the launch gaps
of regional compilation's eager code go, for a compile of seconds; not with reduce-overhead, whose own graphs cannot
be recorded inside another, nor with feature caching, whose UNet computes differently from step to step),
`loop-captured` (`unet+vae` compiled without CUDA graphs, the text encoders recorded as under all-captured, and the
rest of each pipeline call, every step's UNet call, the sampler's updates and the VAE decode, recorded as one CUDA
graph per call signature, `workbench.knobs._loop`: the host gaps between the UNet's graph replays and the sampler's
small kernels go too; a deterministic sampler that never waits for the GPU (DPM-Solver++ 2M, UniPC), no early stop,
and an SDXL VAE that is not recast per image; CUDA only).
Shapes are static (`dynamic=False`): the CFG cutoff's half batch gets its own graph. Compiled code is cached on disk
(Inductor's FX-graph and AOTAutograd caches under `results/compile-cache/<torch>-<device>/`), so a second trial
of a configuration, in a fresh kernel, compiles from the cache; the trial reports the compile and first-call
cost as `compile_s`, never as latency.
`compile_tuning` passes Inductor settings as `torch.compile(options=...)` on top of the mode's own
(`torch._inductor.list_mode_options`), so they hold for this trial's graphs only and are part of the cache key:
`tuned` is diffusers' speed-up guide ("Accelerate inference of text-to-image diffusion models": 1x1 convolutions
lowered to matmuls, coordinate-descent tuning of every Triton kernel's launch configuration checking all
directions, no epilogue fusion; its first compile of SD1.5's UNet ran past 9 minutes on an H100); the others take
one lever each at a compile cost close to the untuned one: `conv-mm` (1x1 convolutions as matmuls, which Inductor
can fuse with their neighbours), `freezing` (weights folded into the graph as constants: constant folding and
convolution weights laid out once; inference only), `gemm-autotune` (matmul and convolution templates benchmarked
per shape, `max_autotune`, without coordinate descent), `fusion` (fewer kernels: fusion without common reads, and
Inductor's experimental combo kernels, which launch independent kernels as one: a CUDA-graphed SD1.5 step spends
~0.4 ms in the GPU's own spacing between its ~650 kernels, docs/gpu.md).
`compile_cache: precompile` caches Dynamo's traced code and guards too (torch's experimental caching precompile,
`workbench.knobs._precompile`), in a folder of this configuration's own under the compile cache: a fresh process
then loads the UNet's and the VAE decoder's compiled frames when torch.compile wraps them instead of tracing their
Python code again (under regional compilation, the repeated blocks' one entry, which they share as they share their
code; the text encoders, compiled with graph breaks and transformers' output-capture wrappers, are traced as before,
and `all-captured` does not trace them). Loading happens while the pipeline is built, so the knob's build seconds
(`compile_load_s`) are added to `compile_s`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from pathlib import Path

from workbench import paths
from workbench.errors import ConfigError
from workbench.knobs import _captured, _loop, _precompile
from workbench.knobs.spec import Field, Row
from workbench.models import model_family

MODES = ("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead")
SCOPES = ("unet", "unet+vae", "all", "all-graphed", "all-captured", "blocks", "blocks-captured", "loop-captured")
# scopes that record CUDA graphs with torch.cuda.graph -> (the scope to use on a CPU, the one where a recording fails)
CAPTURED = {"all-captured": ("unet+vae or all", "all-graphed"), "blocks-captured": ("blocks", "blocks"),
            "loop-captured": ("unet+vae", "unet+vae")}
# samplers a recorded call can hold: deterministic, and no step waits for the GPU (workbench.models.sync_free_sampler)
LOOP_SAMPLERS = ("dpm++2m", "dpm++2m-karras", "unipc", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
CACHES = ("inductor", "precompile")
TUNINGS = {"none": {},
           "tuned": {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True,
                     "coordinate_descent_check_all_directions": True, "epilogue_fusion": False},
           "conv-mm": {"conv_1x1_as_mm": True},
           "freezing": {"freezing": True},
           "gemm-autotune": {"max_autotune": True, "coordinate_descent_tuning": False},
           "fusion": {"aggressive_fusion": True, "combo_kernels": True}}
FIELDS = (
    Field("compile", "none", "none | default | max-autotune-no-cudagraphs | reduce-overhead (CUDA graphs): torch.compile",
          choices=MODES),
    Field("compile_scope", "unet", "unet | unet+vae (the decoder too) | all (the text encoders too) | all-graphed "
          "(their CUDA graphs too) | all-captured (unet+vae, the text encoders' eager kernels as CUDA graphs, no "
          "tracing) | blocks (regional: repeated blocks once) | blocks-captured (regional, then UNet, decoder and "
          "text encoders as CUDA graphs) | loop-captured (unet+vae compiled, each call's steps, sampler and decode "
          "as one CUDA graph)", choices=SCOPES),
    Field("compile_tuning", "none", "none | tuned (Inductor: 1x1 convolutions as matmuls, coordinate-descent tuning of "
          "Triton kernels, no epilogue fusion; a much longer first compile) | conv-mm (1x1 convolutions as matmuls) | "
          "freezing (weights as constants) | gemm-autotune (matmul/conv templates benchmarked) | fusion (fewer, larger "
          "kernels)",
          choices=tuple(TUNINGS)),
    Field("compile_cache", "inductor", "inductor (compiled kernels cached; a fresh process traces the Python code "
          "again) | precompile (Dynamo's traced code cached too: a fresh process skips tracing the UNet and VAE "
          "decoder; torch's experimental caching precompile)", choices=CACHES),
)


def check(cfg, where: str = "config") -> None:
    if cfg.compile != "none" and cfg.backend != "torch":
        raise ConfigError(f"{where}.compile: compiles torch modules; backend {cfg.backend} runs ONNX graphs. Set "
                          "compile: none or backend: torch")
    if cfg.compile == "reduce-overhead" and cfg.compile_scope == "blocks":
        raise ConfigError(f"{where}.compile_scope: CUDA graphs (compile: reduce-overhead) capture a whole module; "
                          "regional compilation leaves eager code between blocks. Use compile_scope: unet or "
                          "unet+vae, or compile: default")
    if cfg.compile_scope in ("blocks-captured", "loop-captured") and cfg.compile == "reduce-overhead":
        raise ConfigError(f"{where}.compile_scope: {cfg.compile_scope} records the UNet as CUDA graphs itself, and "
                          "reduce-overhead's own graphs cannot be recorded inside another; use compile: default")
    if cfg.compile_scope == "loop-captured" and cfg.compile != "none":
        _check_loop(cfg, where)
    if cfg.compile_scope == "blocks-captured" and cfg.compile != "none" and cfg.cache_interval > 1:
        raise ConfigError(f"{where}.compile_scope: blocks-captured replays one recorded UNet call per input shape, "
                          "and feature caching computes a different call from step to step; use compile_scope: "
                          "blocks, or cache_interval: 1")
    if cfg.compile_scope == "all-graphed" and cfg.compile != "reduce-overhead":
        raise ConfigError(f"{where}.compile_scope: all-graphed replays the text encoders as CUDA graphs, which "
                          f"compile: {cfg.compile} does not record; set compile: reduce-overhead or compile_scope: all")
    if cfg.compile_cache == "precompile" and cfg.compile == "none":
        raise ConfigError(f"{where}.compile_cache: precompile caches what torch.compile traces and compile is none; "
                          "set compile: default (or another mode), or compile_cache: inductor")
    if cfg.compile_tuning != "none" and cfg.compile == "none":
        raise ConfigError(f"{where}.compile_tuning: tunes the kernels torch.compile generates and compile is none; set "
                          "compile: default (or another mode), or compile_tuning: none")


def _check_loop(cfg, where: str) -> None:
    """What one recorded CUDA graph of a whole call cannot hold: a decision on the host from the GPU's values, noise
    drawn per step, a sampler that looks its step up on the device, a VAE recast to fp32 and back each image."""
    if cfg.early_stop_tol > 0:
        raise ConfigError(f"{where}.compile_scope: loop-captured replays every step of a call at once, and early stop "
                          "decides on the host after each step; set early_stop_tol: 0, or compile_scope: unet+vae")
    if not {cfg.scheduler.strip(), cfg.scheduler.strip().lower()} & set(LOOP_SAMPLERS):
        raise ConfigError(f"{where}.scheduler: compile_scope: loop-captured records the sampler's steps, and "
                          f"{cfg.scheduler} draws noise or waits for the GPU in them; use one of "
                          f"{', '.join(LOOP_SAMPLERS[:3])}, or compile_scope: unet+vae")
    if cfg.vae_upcast == "auto" and cfg.precision == "fp16" and cfg.vae == "full" and \
            model_family(cfg.model, f"{where}.model") == "sdxl":
        raise ConfigError(f"{where}.vae_upcast: compile_scope: loop-captured records the decode, and diffusers "
                          "recasts an fp16 SDXL VAE to fp32 and back around it each image; set vae_upcast: fp32 "
                          "(or off for an fp16-stable VAE)")


def check_device(cfg, device) -> None:
    if cfg.compile == "reduce-overhead" and device.type != "cuda":
        raise ConfigError(f"compile: reduce-overhead replays CUDA graphs and this trial runs on {device.type}; use "
                          "compile: default or none")
    if cfg.compile != "none" and cfg.compile_scope in CAPTURED and device.type != "cuda":
        raise ConfigError(f"compile_scope: {cfg.compile_scope} records CUDA graphs and this trial runs on "
                          f"{device.type}; use compile_scope: {CAPTURED[cfg.compile_scope][0]}")
    if cfg.compile_cache == "precompile" and (missing := _precompile.available()):
        raise ConfigError(f"compile_cache: precompile needs torch's caching precompile and {missing}; use "
                          "compile_cache: inductor")


def cache_dir(device) -> str:
    """Inductor's cache for this torch version and device: compiled kernels are specific to both."""
    import torch  # heavy

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    name = re.sub(r"[^A-Za-z0-9.+-]+", "_", f"torch-{torch.__version__}-{where}")
    return str((paths.results() / "compile-cache" / name).resolve())


def apply(pipe, cfg, device) -> Row | None:
    """Compile in place of the modules (their hooks and attributes stay reachable through torch's wrapper)."""
    if cfg.compile == "none":
        return None
    import torch  # heavy

    t0 = time.perf_counter()

    # Inductor reads the variable whenever it caches, and sets it to its /tmp default on first use: a folder the user
    # chose is kept, torch's default is replaced (torch's private default_cache_dir; public: none, torch 2.11-2.13)
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # heavy

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is None or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir(device)
    mode = None if cfg.compile == "default" else cfg.compile
    inductor = {}
    if cfg.compile_tuning != "none":  # the mode's settings plus the tuning, as options (torch takes one or the other)
        from torch._inductor import list_mode_options  # heavy

        inductor = {**list_mode_options(cfg.compile), **TUNINGS[cfg.compile_tuning]}
        options = {"options": inductor, "fullgraph": True, "dynamic": False}
    else:
        options = {"mode": mode, "fullgraph": True, "dynamic": False}
    notes: list[str] = []
    folder = None  # under precompile, this configuration's entries (loaded as torch.compile wraps, saved in observe)
    if cfg.compile_cache == "precompile":
        folder = _precompile.folder_for(Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]) / "dynamo", cfg)
        if repaired := _precompile.turn_on(folder):
            notes.append(f"this torch pickles {', '.join(repaired)} with its derived fields: repaired, so entries "
                         "whose guards read a function's defaults load")
    else:
        _precompile.off()
    if cfg.compile_scope in ("blocks", "blocks-captured"):  # under precompile the repeated blocks share one entry
        def blocks(unet):
            unet.compile_repeated_blocks(**options)
            return unet

        if folder is None:
            blocks(pipe.unet)
        else:  # a block's entry that does not load: the folder starts afresh (the UNet's own entry_of is not it)
            _precompile.compile_module(blocks, pipe.unet, folder, notes)
    elif getattr(pipe.unet, "compiles_itself", False):  # feature caching: its full and shallow paths
        _compiled(pipe.unet, options, folder, notes, in_place=True)
    else:
        pipe.unet = _compiled(pipe.unet, options, folder, notes)
    if cfg.compile_scope in ("unet+vae", "all", "all-graphed", "all-captured", "loop-captured"):
        pipe.vae.decoder = _compiled(pipe.vae.decoder, options, folder, notes)
    if cfg.compile_scope in ("all", "all-graphed"):
        # graph breaks allowed: transformers installs its hidden-state capture hooks under a lock Dynamo cannot
        # trace (SDXL asks its encoders for hidden states; seen with transformers 5 on an H100)
        kernels = {**options, "fullgraph": False}
        graphed = cfg.compile_scope == "all-graphed"
        if not graphed:  # Inductor kernels without CUDA graphs (module docstring)
            if inductor:
                kernels["options"] = {k: v for k, v in inductor.items() if k != "triton.cudagraphs"}
            elif cfg.compile == "reduce-overhead":
                kernels["mode"] = None
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                with (torch._dynamo.config.patch(caching_precompile=False) if cfg.compile_cache == "precompile"
                      else contextlib.nullcontext()):  # traced in every process (module docstring)
                    encoder = torch.compile(getattr(pipe, name), **kernels)
                if graphed:  # the next replay reuses the graph's output memory: keep this encoding's own copy
                    encoder.register_forward_hook(_copied_out)
                setattr(pipe, name, encoder)
    recorded = _capturable(pipe, cfg)  # recorded at each module's first call of an input shape
    for name, module in recorded:
        _captured.capture(module, name, cfg.compile_scope, CAPTURED[cfg.compile_scope][1])
    if cfg.compile_scope == "loop-captured":  # each call after its prompt encoding, recorded at its first signature
        _loop.record_calls(pipe, instead=CAPTURED["loop-captured"][1])
        recorded = [*recorded, ("loop", None)]
    protocol = {"mode": cfg.compile, "scope": cfg.compile_scope, "tuning": cfg.compile_tuning,
                "inductor_options": inductor, "fullgraph": True, "dynamic": False,
                "text_encoders_graph_breaks": cfg.compile_scope in ("all", "all-graphed"),
                "text_encoders_cuda_graphs": cfg.compile_scope in ("all-graphed", *CAPTURED),
                "recorded_by_torch_cuda_graph": [name for name, _ in recorded],
                "text_encoders_compiled": cfg.compile_scope in ("all", "all-graphed"),
                "cache_dir": os.environ["TORCHINDUCTOR_CACHE_DIR"], "torch": torch.__version__,
                "cache": cfg.compile_cache,
                "compile_s": "seconds in torch.compile while the pipeline is built (precompiled code loaded there) "
                             "plus those of the warm-up batch (compilation of every shape, first calls) minus the "
                             "median timed batch"}
    if cfg.compile_cache == "precompile":
        protocol["precompile"] = {"folder": str(folder), "loaded": _precompile.counters(), "notes": notes,
                                  "keyed_without": list(_precompile.UNSHAPED)}
    return Row({"compile_load_s": time.perf_counter() - t0}, {"compile": protocol})


def _compiled(module, options: dict, folder: Path | None, notes: list[str], in_place: bool = False):
    """torch.compile of one module (`in_place`: the module's own `compile`, which feature caching's UNet routes to
    its paths); under precompile (a `folder`) with its undecorated forward, loaded from the folder where saved."""
    import torch  # heavy

    def wrap(m):
        if in_place:
            m.compile(**options)
            return m
        return torch.compile(m, **options)

    if folder is None:
        return wrap(module)
    _precompile.plain_forward(module)
    return _precompile.compile_module(wrap, module, folder, notes)


@contextlib.contextmanager
def eager():
    """Inside, whatever this knob compiled or recorded runs its eager code: torch.compile's modules (torch's
    `force_eager` stance) and the captured scopes' recordings (no replay). The trial counts FLOPs in here."""
    import torch  # heavy

    with torch.compiler.set_stance("force_eager"), _captured.plain():
        yield


def call(pipe, cfg) -> dict:
    """Under loop-captured, the knobs' call-time settings a recorded call is for (its graphs are keyed by them; the
    sizes of what it is given key them too)."""
    if cfg.compile == "none" or cfg.compile_scope != "loop-captured":
        return {}
    specs = [f.metadata.get("spec") for f in dataclasses.fields(cfg)]
    return {_loop.KEY: tuple((s.name, getattr(cfg, s.name)) for s in specs
                             if s is not None and s.call_time and s.source.startswith("workbench.knobs."))}


def observe(pipe, cfg) -> Row | None:
    """Under precompile, save what this process traced (after the warm-up compiled every shape) for the next one;
    under the captured scopes, how many graphs each module recorded and replayed."""
    if cfg.compile == "none":
        return None
    row = Row({}, {})
    if cfg.compile_scope in CAPTURED:
        row.protocols["compile_captured_graphs"] = {
            name: {"graphs": len(module.forward.graphs), "replays": module.forward.replays}
            for name, module in _capturable(pipe, cfg) if isinstance(module.forward, _captured.CapturedForward)}
        if (loop := _loop.recorder_of(pipe)) is not None:
            row.protocols["compile_captured_graphs"]["loop"] = {"graphs": len(loop.graphs.graphs),
                                                                "replays": loop.graphs.replays}
    if cfg.compile_cache == "precompile":
        row.metrics["precompile_save_s"] = (saved := _precompile.save())["save_s"]
        row.protocols["compile_precompile_save"] = {"entries_written": saved["entries_written"],
                                                    "loaded": _precompile.counters()}
    return row if row.metrics or row.protocols else None


def _capturable(pipe, cfg) -> list:
    """(name, module) of what a captured scope records: the text encoders; under blocks-captured the UNet and the VAE
    decoder too (under all-captured those are torch.compile's)."""
    if cfg.compile == "none" or cfg.compile_scope not in CAPTURED:
        return []
    names = ("text_encoder", "text_encoder_2") + (("unet", "vae.decoder") if cfg.compile_scope == "blocks-captured"
                                                    else ())
    found = [(name, pipe.vae.decoder if name == "vae.decoder" else getattr(pipe, name, None)) for name in names]
    return [(name, module) for name, module in found if module is not None]


def _copied_out(module, args, output):
    """Forward hook: the encoder's outputs copied out of the CUDA graph's memory pool (a replay overwrites them)."""
    import torch  # heavy
    from torch.utils._pytree import tree_map_only  # no public pytree in torch 2.13 (as workbench.measure.cost)

    return tree_map_only(torch.Tensor, torch.clone, output)
