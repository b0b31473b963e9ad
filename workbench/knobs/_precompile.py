"""torch's caching precompile (experimental in torch 2.11-2.13), the one place that touches its private parts.

    turn_on(folder)                           # Dynamo's traced code and guards saved to and loaded from `folder`
    unet = torch.compile(unet, ...)           # a saved entry for this module is loaded here, at wrap time
    ...warm-up...                             # first calls: traced and compiled only where nothing was loaded
    save()                                    # what this process traced, written for the next one

Inductor's FX-graph and AOTAutograd caches spare a fresh process the kernels' compilation, not Dynamo's tracing of
the Python code (28 s of SDXL's 47.5 s second compile on an H100, docs/gpu.md). With
`torch._dynamo.config.caching_precompile` Dynamo also records each compiled frame's bytecode and guards
(`torch._dynamo.package.CompilePackage`) with the compiled backends, and `torch.compile` of the same function in a
new process installs them instead of tracing. torch keys an entry by the function's qualified name and first line
only (`CompilePackage.source_id_from_fn`), so every UNet2DConditionModel would share one entry, and it drops the
guards on object identity (ID_MATCH, DICT_VERSION): the entries therefore live in one folder per configuration
(`folder_for`), whose modules are built the same way each time.
Two things a diffusers pipeline needs, found on this CPU with torch 2.13 and diffusers 0.42: the UNet's forward is
wrapped by diffusers' `apply_lora_scale` decorator, whose closure a loaded entry cannot resolve (AttributeError:
'_Missing' object has no attribute '__defaults__'), so `plain_forward` binds the undecorated forward (the decorator
only scales PEFT LoRA layers, which workbench pipelines do not have); and a loaded entry cannot rebuild a returned
dataclass (the pipelines call the UNet with `return_dict=False`, which returns a tuple).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import types
from pathlib import Path

# call-time fields that change neither the compiled modules nor their input shapes (the entries' guards check shapes)
UNSHAPED = ("seeds", "steps", "cfg_scale", "early_stop_tol", "early_stop_min", "timing_repeats", "quality",
            "fid_reference", "clip_model", "per_image")


def available() -> str | None:
    """None when this torch has caching precompile; else why not (one line)."""
    import torch  # heavy

    try:
        from torch._dynamo import package  # heavy: private (torch has no public face for it)
        from torch._dynamo.precompile_context import PrecompileContext  # noqa: F401  heavy: private
    except ImportError as err:
        return f"torch {torch.__version__} has no caching precompile ({err})"
    if not hasattr(torch._dynamo.config, "caching_precompile") or not hasattr(package, "DynamoCache"):
        return f"torch {torch.__version__} has no torch._dynamo.config.caching_precompile / DynamoCache"
    if isinstance(getattr(type(package.DynamoCache), "path_prefix", None), property):
        return f"torch {torch.__version__}'s DynamoCache folder is a property this adapter cannot point elsewhere"
    return None


def folder_for(root: Path, cfg) -> Path:
    """The configuration's own folder under `root`: everything that builds the modules or shapes their inputs."""
    fields = {k: v for k, v in sorted(cfg.to_dict().items()) if k not in UNSHAPED}
    return root / hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def turn_on(folder: Path) -> list[str]:
    """Caching precompile on, its entries in `folder`: torch.compile loads them as it wraps a module, and Dynamo records
    a frame for saving when it compiles it, at the first call (so the setting stays on until `off`). Returns the guard
    source classes whose pickling had to be repaired (`repair_source_pickling`)."""
    import torch  # heavy
    from torch._dynamo import package  # heavy: private
    from torch._dynamo.precompile_context import PrecompileContext  # heavy: private

    folder.mkdir(parents=True, exist_ok=True)
    repaired = repair_source_pickling()
    PrecompileContext.clear()  # an earlier trial of this process must not be saved into this trial's folder
    _point(package.DynamoCache, str(folder))  # the instance every torch entry point uses
    torch._dynamo.config.caching_precompile = True
    return repaired


def repair_source_pickling() -> list[str]:
    """Make guard sources with derived fields loadable where this torch pickles them wrongly; returns the classes
    repaired in this process (none on torch 2.13).

    torch 2.11 pickles a guard's source with every dataclass field, the derived `init=False` ones too, so an entry
    whose guards read a function's defaults (`DefaultsSource`: SDXL's UNet on an H100) fails to load with
    "DefaultsSource.__init__() takes from 3 to 4 positional arguments but 6 were given". torch 2.13 passes the init
    fields alone; this gives the older torch the same reduce, only where a round trip shows it is needed."""
    import dataclasses
    import pickle

    from torch._dynamo import source  # heavy: private
    from torch._guards import Source  # heavy: private

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    try:
        pickle.loads(pickle.dumps(source.DefaultsSource(source.LocalSource("f"), 0)))
    except TypeError:
        for cls in subclasses(Source):
            if dataclasses.is_dataclass(cls) and not all(f.init for f in dataclasses.fields(cls)):
                cls.__reduce__ = _init_fields_only
    return sorted({cls.__name__ for cls in subclasses(Source) if cls.__dict__.get("__reduce__") is _init_fields_only})


def _init_fields_only(self):
    """torch 2.13's reduce of a guard source: the dataclass's init fields alone."""
    import dataclasses

    return type(self), tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.init)


def _point(cache, folder: str) -> None:
    """Send a DiskDynamoCache to `folder`: torch 2.13 asks its `path_prefix()` method each time (an instance attribute
    shadows it); earlier releases read a plain `path_prefix` attribute of the instance."""
    if callable(getattr(type(cache), "path_prefix", None)):
        cache.path_prefix = lambda: folder
    else:
        cache.path_prefix = folder


def off() -> None:
    """Caching precompile off (a later compile of this process, of another trial, must not record or load)."""
    import torch  # heavy

    if getattr(torch._dynamo.config, "caching_precompile", False):
        torch._dynamo.config.caching_precompile = False


def plain_forward(module) -> None:
    """Bind the module's undecorated forward (diffusers' `apply_lora_scale` wrapper holds a closure a loaded entry
    cannot resolve); a no-op for a forward that is not wrapped."""
    forward = type(module).forward
    if hasattr(forward, "__wrapped__"):
        module.forward = types.MethodType(forward.__wrapped__, module)


def compile_module(compile_fn, module, folder: Path, notes: list[str]):
    """`compile_fn(module)` under caching precompile; an entry that fails to load is deleted (this module's alone:
    the others in the folder still load) and the module wrapped again, traced afresh at its first call, with the
    reason in `notes`."""
    try:
        return compile_fn(module)
    except Exception as err:  # torch raises what its guard rebuilding meets (AttributeError, NameError, ...)
        notes.append(f"{type(module).__name__}: saved entry not loadable ({type(err).__name__}: {err}); deleted, "
                     "traced afresh")
        entry = entry_of(module, folder)
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.exists():
            entry.unlink()
        else:  # not where this torch keeps it: start the configuration's folder afresh
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
        return compile_fn(module)


def entry_of(module, folder: Path) -> Path:
    """Where torch keeps the module's entry: named by its forward's qualified name and first line."""
    from torch._dynamo.package import CompilePackage  # heavy: private

    return folder / CompilePackage.source_id_from_fn(module.forward)


def counters() -> dict:
    """Dynamo's own counts of entries loaded (hits), not found (misses) and not loadable (errors)."""
    from torch._dynamo.utils import counters as torch_counters  # heavy: private counters (no public ones)

    return dict(torch_counters["dynamo_cache"])


def save() -> dict:
    """Write what this process traced and compiled (nothing when everything was loaded); returns the entries' count
    and the seconds spent."""
    from torch._dynamo.precompile_context import PrecompileContext  # heavy: private

    t0 = time.perf_counter()
    info = PrecompileContext.save_to_dynamo_cache()
    return {"entries_written": len(info.get("dynamo", [])), "save_s": time.perf_counter() - t0}
