"""The GPU runtime knobs on this CPU with the tiny pipeline: each changes what it says (memory format, fused
projections, attention processors, torchao tensors, a compiled module), keeps the images within rounding of eager,
and what a device cannot run is refused in one line before anything is built or written."""
import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from workbench import knobs
from workbench.config import TrialConfig
from workbench.errors import ConfigError
from workbench.knobs.attention import KernelChoice
from workbench.prompts import load_prompts, prompts_for
from workbench.trial import build_pipeline, generate, run_trial

CPU = torch.device("cpu")
BASE = {"model": "tiny-random", "steps": 3, "seeds": "0-1", "quality": False, "timing_repeats": 1, "batch_size": 2}
PROMPTS = prompts_for(load_prompts("world-v1"), 2)


def _cfg(**kw) -> TrialConfig:
    return TrialConfig.from_dict({**BASE, **kw})


@pytest.fixture(scope="module")
def eager_images():
    pipe, _ = build_pipeline(_cfg(), CPU)
    return generate(pipe, _cfg(), PROMPTS, [0, 1], 32, CPU)


def _images(cfg):
    pipe, row = build_pipeline(cfg, CPU)
    return pipe, row, generate(pipe, cfg, PROMPTS, [0, 1], 32, CPU)


def _close(a, b, levels=2):
    return (a.int() - b.int()).abs().max().item() <= levels  # uint8 images: rounding apart, not different images


def test_channels_last_changes_the_layout_not_the_images(eager_images):
    pipe, _, images = _images(_cfg(channels_last=True))
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert _close(images, eager_images)


def test_fused_projections_and_a_pinned_kernel_compose(eager_images):
    pipe, _, images = _images(_cfg(fuse_qkv=True, attention="math"))
    processors = list(pipe.unet.attn_processors.values())
    assert processors and all(isinstance(p, KernelChoice) for p in processors)
    assert all(type(p.inner).__name__ == "FusedAttnProcessor2_0" for p in processors)  # the wrapper keeps fusion
    assert any(getattr(m, "fused_projections", False) for m in pipe.unet.modules())
    assert _close(images, eager_images)


@pytest.mark.parametrize("scheme", ["int8-weight-only", "int8-dynamic"])
def test_torchao_quantises_the_eligible_linears_and_still_generates(scheme, eager_images):
    pipe, row, images = _images(_cfg(torchao=scheme))
    quantised = [n for n, m in pipe.unet.named_modules() if isinstance(m, torch.nn.Linear)
                 and type(m.weight).__name__ != "Parameter"]
    assert quantised and len(quantised) == row.metrics["torchao_layers"] == row.protocols["torchao"]["quantized"]
    assert not any("time_emb" in n for n in quantised)  # a few rows per call: torchao's int8 matmul cannot
    assert images.shape == (2, 3, 32, 32) and _close(images, eager_images, levels=40)


def test_torchao_leaves_inductor_settings_alone_and_fp8_survives_a_zero_row():
    """torchao's configs by default switch on coordinate-descent tuning for the whole process (minutes more of every
    later compile, and a leak into the next in-process trial); FP8's row scale of an all-zero row (SDXL's zeroed
    negative prompt) is 0 without a floor, and the row becomes NaN."""
    from torch._inductor import config as inductor

    from torchao.quantization.quant_primitives import _choose_scale_float8, _quantize_affine_float8

    from workbench.knobs.torchao import config_of

    before = (inductor.coordinate_descent_tuning, inductor.force_fuse_int_mm_with_mul)
    _images(_cfg(torchao="int8-dynamic"))
    assert (inductor.coordinate_descent_tuning, inductor.force_fuse_int_mm_with_mul) == before
    rows = torch.zeros(2, 32, dtype=torch.bfloat16)
    rows[1] = torch.linspace(-3, 3, 32)
    fp8 = config_of("fp8-dynamic-row")
    floored = _choose_scale_float8(rows, block_size=[1, 32], float8_dtype=torch.float8_e4m3fn,
                                   hp_value_lb=fp8.activation_value_lb)
    assert torch.isfinite(_quantize_affine_float8(rows, floored, torch.float8_e4m3fn).float()).all()
    bare = _choose_scale_float8(rows, block_size=[1, 32], float8_dtype=torch.float8_e4m3fn)
    assert not torch.isfinite(_quantize_affine_float8(rows, bare, torch.float8_e4m3fn).float()).all()  # the defect


def test_static_fp8_calibrates_one_scale_per_layer_outside_the_trial_and_still_generates():
    """fp8-static: torchao's observers see one calibration call (prompts and seeds the trial does not use, not counted
    by the prompt cache), then every eligible linear holds FP8 weights and a fixed activation scale of its own. The
    trial refuses FP8 on a CPU (above); torchao's FP8 tensors still compute here, so the pipeline is built directly,
    every knob in the registry's order. With fused QKV projections the unfused originals stay in the UNet, unused:
    no calibration reaches them, so they stay in float and are not counted (torchao cannot convert them)."""
    from workbench.knobs import prompt_cache
    from workbench.knobs import torchao as knob
    from workbench.measure import unet_flops

    bf16 = _cfg(precision="bf16", prompt_cache=True, fuse_qkv=True)
    pipe, _ = build_pipeline(bf16, CPU)
    reference = generate(pipe, bf16, PROMPTS, [0, 1], 32, CPU)
    unet = pipe.unet.config
    with torch.device("meta"):  # one CFG-batch UNet call's arguments, for the row's FLOP count
        call = ((torch.empty(2, unet.in_channels, 4, 4, dtype=torch.bfloat16), torch.tensor(500),
                 torch.empty(2, 8, unet.cross_attention_dim, dtype=torch.bfloat16)), {})
    float_flops = unet_flops.count_call(unet_flops.meta_copy(pipe.unet)[0], *call)
    cfg = _cfg(precision="bf16", prompt_cache=True, fuse_qkv=True, torchao="fp8-static")
    pipe, row = build_pipeline(cfg, CPU)
    weights = {n: m.weight for n, m in pipe.unet.named_modules() if isinstance(m, torch.nn.Linear)
               and type(m.weight).__name__ != "Parameter"}
    assert len(weights) == row.metrics["torchao_layers"] == row.protocols["torchao"]["quantized"] > 0
    assert all(w.qdata.dtype == torch.float8_e4m3fn for w in weights.values())
    scales = torch.stack([w.act_quant_scale.float().reshape(()) for w in weights.values()])
    assert torch.isfinite(scales).all() and (scales > 0).all() and scales.unique().numel() > len(scales) // 2
    assert row.protocols["torchao"]["calibration"]["prompts"] == knob.CALIBRATION["prompts"]
    unused = row.protocols["torchao"]["unobserved_float"]
    assert unused["layers"] > 0 and set(unused["kinds"]) <= {"to_q", "to_k", "to_v"}
    left = [n for n, m in pipe.unet.named_modules() if type(m) is torch.nn.Linear
            and n.endswith(("to_q", "to_k", "to_v")) and type(m.weight).__name__ == "Parameter"]
    assert len(left) == unused["layers"]  # put back as plain float linears, not observers
    assert unet_flops.count_call(unet_flops.meta_copy(pipe.unet)[0], *call) == float_flops > 0  # TFLOP/s on CUDA
    images = generate(pipe, cfg, PROMPTS, [0, 1], 32, CPU)
    assert images.shape == reference.shape and not torch.equal(images, reference) and _close(images, reference, 40)
    looked_up = prompt_cache.observe(pipe, cfg).protocols["prompt_cache"]
    assert looked_up["hits"] + looked_up["misses"] == len(PROMPTS)  # the trial's own prompts, not calibration's


def test_torchao_keeps_the_most_important_linears_in_float():
    pipe, row, _ = _images(_cfg(torchao="int8-weight-only", quant_keep=0.25, importance="sensitivity"))
    kept = row.protocols["torchao"]["kept_float"]
    assert kept and row.protocols["torchao"]["importance"]
    modules = dict(pipe.unet.named_modules())
    assert all(type(modules[n].weight).__name__ == "Parameter" for n in kept)


def test_compile_runs_a_trial_and_a_fresh_process_compiles_from_the_cache(tmp_path):
    """compile: default on the CPU's Inductor, trials of one configuration, each in a fresh process (as sweeps run
    them, one papermill kernel each): the second compiles from the on-disk cache under the results folder (cache hits
    counted by torch, not timed); compile_s is its own column. With compile_cache: precompile a fresh process loads
    Dynamo's traced code too: it traces nothing (torch's own phase timings) and makes the same images, under regional
    compilation too."""
    import json
    import os

    probe = textwrap.dedent("""
        import json, sys
        from workbench.trial import run_trial
        import torch._dynamo.utils as u
        row = run_trial(json.loads(sys.argv[1]), artifacts_dir=sys.argv[2], progress=False)
        hits = u.counters["inductor"]["fxgraph_cache_hit"] + u.counters["aot_autograd"]["autograd_cache_hit"]
        names, _ = u.compile_times(repr="csv", aggregate=True)
        print("ROW", json.dumps({"hits": hits, "seconds": row["metrics"]["compile_s"], "traced": "bytecode_tracing" in
                                 names, "loaded": dict(u.counters["dynamo_cache"]), "images": row["artifacts"]["images"],
                                 "save": row["protocols"].get("compile_precompile_save"), **row["protocols"]["compile"]}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["WORKBENCH_RESULTS"] = str(tmp_path / "results")
    rows = []
    for run, cache, scope in (("first", "inductor", "unet"), ("second", "inductor", "unet"),
                              ("traced", "precompile", "unet"), ("loaded", "precompile", "unet"),
                              ("blocks traced", "precompile", "blocks"), ("blocks loaded", "precompile", "blocks")):
        cfg = dict(BASE, compile="default", compile_cache=cache, compile_scope=scope)
        done = subprocess.run([sys.executable, "-c", probe, json.dumps(cfg), str(tmp_path / run)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        rows.append(json.loads(done.stdout.split("ROW ", 1)[1]))
    first, second, traced, loaded, blocks_traced, blocks_loaded = rows
    assert first["mode"] == "default" and first["seconds"] > 0 and first["hits"] == 0
    assert first["cache_dir"] == second["cache_dir"] and first["cache_dir"].startswith(str(tmp_path / "results"))
    assert second["hits"] > 0 and second["traced"]  # the fresh process found the first one's compiled graphs...
    assert traced["traced"] and traced["save"]["entries_written"] == 1  # ...and traced the code again, as this one
    assert loaded["loaded"] == {"dynamo_cache_hit": 1} and not loaded["traced"]  # this one loaded what it saved
    assert loaded["precompile"]["folder"] == traced["precompile"]["folder"]
    assert not [n for n in loaded["precompile"]["notes"] if "not loadable" in n]  # (torch 2.11 notes its repair)
    assert loaded["save"]["entries_written"] == 0
    # regional compilation: the repeated blocks share one entry (their code), and every block loads it
    assert blocks_traced["traced"] and blocks_traced["save"]["entries_written"] == 1
    assert not blocks_loaded["traced"] and blocks_loaded["loaded"]["dynamo_cache_hit"] > 1
    assert blocks_loaded["precompile"]["folder"] != loaded["precompile"]["folder"]
    from workbench.images import load_images

    images = [load_images(Path(r["images"]), [0, 1]) for r in (first, loaded, blocks_traced, blocks_loaded)]
    assert torch.equal(images[0], images[1]) and torch.equal(images[2], images[3])


def test_a_precompiled_entry_that_does_not_load_is_deleted_and_traced_afresh(tmp_path):
    """The module's own entry goes (it is traced afresh); another module's entry in the folder stays loadable."""
    from workbench.knobs import _precompile

    folder = tmp_path / "entries"
    module = torch.nn.Linear(2, 2)
    stale, other = _precompile.entry_of(module, folder), folder / "another-module"
    folder.mkdir()
    stale.write_bytes(b"stale")
    other.write_bytes(b"other")
    calls, notes = [], []

    def compile_fn(m):
        calls.append(m)
        if len(calls) == 1:
            raise AttributeError("'_Missing' object has no attribute '__defaults__'")
        return "compiled"

    assert _precompile.compile_module(compile_fn, module, folder, notes) == "compiled"
    assert len(calls) == 2 and not stale.exists() and other.read_bytes() == b"other"
    assert len(notes) == 1 and notes[0].startswith("Linear: saved entry not loadable (AttributeError")


def test_guard_sources_pickled_with_their_derived_fields_are_repaired(monkeypatch):
    """torch 2.11 pickles DefaultsSource with its init=False fields, so an SDXL UNet's entry did not load on an H100;
    the repair gives such sources torch 2.13's reduce, and only where a round trip fails."""
    import dataclasses
    import pickle

    from torch._dynamo import source
    from workbench.knobs import _precompile

    def every_field(self):  # torch 2.11's reduce
        return type(self), tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    probe = source.DefaultsSource(source.LocalSource("forward"), 1)

    def round_trips() -> bool:
        try:
            return pickle.loads(pickle.dumps(probe)) == probe
        except TypeError:
            return False

    needed = not round_trips() or source.DefaultsSource.__dict__.get("__reduce__") is _precompile._init_fields_only
    assert _precompile.repair_source_pickling() == (["DefaultsSource"] if needed else [])  # torch 2.13: none touched
    assert round_trips()
    monkeypatch.setattr(source.DefaultsSource, "__reduce__", every_field)
    with pytest.raises(TypeError, match="positional arguments"):
        pickle.loads(pickle.dumps(probe))
    assert _precompile.repair_source_pickling() == ["DefaultsSource"]
    assert pickle.loads(pickle.dumps(probe)) == probe


@pytest.mark.parametrize("tuning, option", [("tuned", "coordinate_descent_tuning"), ("freezing", "freezing"),
                                            ("fusion", "aggressive_fusion")])
def test_tuned_compile_passes_inductor_options_and_keeps_the_images(tuning, option, eager_images):
    """compile_tuning on the CPU's Inductor: the mode's options plus the tuning reach torch.compile (the row says
    which), and the images stay those of eager (freezing folds the weights into the graph as constants)."""
    pipe, row, images = _images(_cfg(compile="default", compile_tuning=tuning))
    protocol = row.protocols["compile"]
    assert protocol["tuning"] == tuning and protocol["inductor_options"][option] is True
    assert type(pipe.unet).__name__ == "OptimizedModule"
    assert _close(images, eager_images)


def test_graphed_text_encoders_keep_each_encoding_out_of_the_graph_pool():
    """compile_scope all-graphed: a CUDA-graph replay reuses its output memory, so the hook hands the pipeline a copy
    of every tensor of the encoder's output (SDXL keeps the first encoding's pooled output across the second call)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from workbench.knobs.compile import _copied_out

    encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                           num_hidden_layers=2, vocab_size=100, bos_token_id=0, eos_token_id=2)).eval()
    out = encoder(torch.randint(3, 99, (2, 7)), output_hidden_states=True)
    copied = _copied_out(encoder, (), out)
    assert type(copied) is type(out) and len(copied.hidden_states) == len(out.hidden_states)
    pairs = [(copied.last_hidden_state, out.last_hidden_state), (copied.pooler_output, out.pooler_output),
             *zip(copied.hidden_states, out.hidden_states)]
    assert all(a.data_ptr() != b.data_ptr() and torch.equal(a, b) for a, b in pairs)


def _cpu_replayed(rerun: bool = True):
    """`CapturedForward` with a recording this CPU can run: the warm-up runs, the recorded run, and replays that run
    it again on the captured inputs into the captured outputs, as a CUDA graph writes its pool (`rerun=False`: the
    outputs stay as recorded and nothing runs, as in a real replay)."""
    from torch.utils._pytree import tree_leaves

    from workbench.knobs._captured import CapturedForward

    class Replayed(CapturedForward):
        def _record(self, run):
            for _ in range(self.warmup):
                run()
            out, events = self._recording(run)

            def replay():
                if rerun:
                    for static, new in zip(tree_leaves(out), tree_leaves(run())):
                        static.copy_(new)
            return replay, (out, events)

    return Replayed


def test_captured_text_encoders_replay_fresh_inputs_and_keep_each_output():
    """compile_scope all-captured: a graph per call signature, each call's inputs copied into the captured ones and its
    outputs copied out of the graph's memory (replays here re-run the forward into the captured outputs, as a CUDA
    graph writes into its pool: a wrapper that skipped either copy would hand back stale or overwritten encodings)."""
    from torch.utils._pytree import tree_leaves
    from transformers import CLIPTextConfig, CLIPTextModel

    encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                           num_hidden_layers=2, vocab_size=100, bos_token_id=0, eos_token_id=2)).eval()
    prompt, negative, longer = torch.randint(3, 99, (1, 7)), torch.randint(3, 99, (1, 7)), torch.randint(3, 99, (1, 9))
    with torch.no_grad():
        eager = [encoder(ids, output_hidden_states=True) for ids in (prompt, negative)]
        encoder.forward = captured = _cpu_replayed()(encoder.forward, "text_encoder")
        got = [encoder(ids, output_hidden_states=True) for ids in (prompt, negative)]
        assert len(captured.graphs) == 1 and captured.replays == 2  # one signature, two replays
        for out, ref in zip(got, eager):
            assert type(out) is type(ref) and len(out.hidden_states) == len(ref.hidden_states)
            assert all(torch.equal(a, b) for a, b in zip(tree_leaves(out), tree_leaves(ref)))
        assert not torch.equal(got[0].pooler_output, got[1].pooler_output)
        assert torch.equal(encoder(longer).pooler_output, encoder.__class__.forward(encoder, longer).pooler_output)
        assert len(captured.graphs) == 2  # another shape (and no hidden states asked): its own graph


@pytest.mark.parametrize("scope, recorded, unet_type", [
    ("all-captured", ["text_encoder"], "OptimizedModule"),
    ("blocks-captured", ["text_encoder", "unet", "vae.decoder"], "UNet2DConditionModel")])
def test_captured_scopes_record_the_modules_they_name(scope, recorded, unet_type):
    """The knob's wiring, without a GPU (nothing is called, so nothing is recorded): all-captured records the text
    encoders beside torch.compile's UNet and decoder; blocks-captured compiles the repeated blocks in place and
    records the UNet, the decoder and the text encoders whole; the row names what each recorded."""
    from workbench.knobs import compile as knob
    from workbench.knobs._captured import CapturedForward
    from workbench.models import tiny_random_pipeline

    pipe = tiny_random_pipeline()
    cfg = _cfg(compile="default", compile_scope=scope)
    row = knob.apply(pipe, cfg, CPU)
    assert row.protocols["compile"]["recorded_by_torch_cuda_graph"] == recorded
    assert type(pipe.unet).__name__ == unet_type
    modules = {"text_encoder": pipe.text_encoder, "unet": pipe.unet, "vae.decoder": pipe.vae.decoder}
    assert [n for n, m in modules.items() if isinstance(m.forward, CapturedForward)] == recorded
    if scope == "blocks-captured":  # regional compilation in place: the blocks' own compiled calls
        assert any(m._compiled_call_impl is not None for m in pipe.unet.modules())
    assert knob.observe(pipe, cfg).protocols["compile_captured_graphs"] == {
        name: {"graphs": 0, "replays": 0} for name in recorded}


def _replayed_loop(pipe, rerun: bool = True):
    """`workbench.knobs._loop` on the pipeline with replays this CPU can run (`_cpu_replayed`)."""
    from workbench.knobs import _loop

    recorder = _loop.record_calls(pipe)
    recorder.graphs = _cpu_replayed(rerun)(recorder._denoise_and_decode, "loop")
    return recorder


@pytest.mark.parametrize("model, extra", [("tiny-random", {}), ("tiny-sdxl", {}),
                                          ("tiny-random", {"cache_interval": 2, "steps": 5})])
def test_a_recorded_call_makes_the_images_of_diffusers_own_call(model, extra, monkeypatch):
    """compile_scope loop-captured: the prompt encoded and the noise drawn on the host, then diffusers' own call
    from them recorded once per signature (here with a CFG cutoff, whose callback halves the batch mid-loop, and
    with feature caching, whose step count restarts for each run the recording makes) and replayed: the same images
    as the plain call, for fresh seeds and prompts too; the sampler's set_timesteps (a host-to-device copy) runs
    once per schedule and never inside a recording; SDXL's time ids are made once."""
    from workbench.knobs import _loop

    cfg = TrialConfig.from_dict({**BASE, "model": model, "steps": 3, "cfg_cutoff": 0.5, "seeds": "0-3", **extra})
    pipe, _ = build_pipeline(cfg, CPU)
    plain = [generate(pipe, cfg, PROMPTS, seeds, 32, CPU) for seeds in ([0, 1], [2, 3])]
    recorder = _replayed_loop(pipe)
    key = (("steps", cfg.steps), ("cfg_cutoff", 0.5))
    real = []
    monkeypatch.setattr(type(pipe.scheduler), "set_timesteps",
                        lambda self, *a, _f=type(pipe.scheduler).set_timesteps, **k: real.append(1) or _f(self, *a, **k))

    def recorded(seeds, prompts=PROMPTS):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        out = pipe(prompts, generator=generators, height=32, width=32, output_type="pt", **knobs.call(pipe, cfg),
                   **{_loop.KEY: key}).images
        return (out.float().clamp(0, 1) * 255).round().to(torch.uint8)

    first, second = recorded([0, 1]), recorded([2, 3])
    assert torch.equal(first, plain[0]) and torch.equal(second, plain[1])
    assert len(recorder.graphs.graphs) == 1 and recorder.graphs.replays == 2
    assert len(real) == 1 and len(recorder.schedules) == 1  # 2 warm-up calls and the recording: one real schedule
    if model == "tiny-sdxl":
        assert len(recorder.time_ids) == 1
    assert "set_timesteps" not in vars(pipe.scheduler) and "_get_add_time_ids" not in vars(pipe)
    other = TrialConfig.from_dict({**cfg.to_dict(), "steps": 2, "cache_interval": 1})
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    pipe(PROMPTS, generator=generators, height=32, width=32, output_type="pt", **knobs.call(pipe, other),
         **{_loop.KEY: (("steps", 2),)})
    assert len(recorder.graphs.graphs) == 2  # other call-time settings: a graph of their own
    plain_again = generate(pipe, cfg, PROMPTS, [0, 1], 32, CPU)  # a call without the key: diffusers' own call
    assert torch.equal(plain_again, plain[0]) and recorder.graphs.replays == 3
    latents = torch.zeros(2, pipe.unet.config.in_channels, 4, 4)  # its own latents: diffusers' own call too
    pipe(PROMPTS, latents=latents, height=32, width=32, output_type="pt", **knobs.call(pipe, cfg), **{_loop.KEY: key})
    assert recorder.graphs.replays == 3 and len(recorder.graphs.graphs) == 2


@pytest.mark.parametrize("model, sampler", [("tiny-random", "dpm++2m"), ("tiny-random", "unipc"),
                                            ("tiny-sdxl", "dpm++2m-karras")])
def test_a_recorded_call_reads_nothing_back_and_copies_nothing_in(model, sampler):
    """What a CUDA graph of the whole call cannot hold, checked on the meta device (no values: `.item()`, `bool()`,
    `nonzero` raise) with every copy from the host into it watched: diffusers' call from embeddings and noise to
    images, as the recording runs it (after one call that set the schedule), neither reads a value back nor copies a
    host tensor in (a replay would copy from whatever the host memory then holds). Without the kept schedule, the
    sampler's timesteps are copied in again, and the watch sees it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from workbench.knobs import _loop
    from workbench.models import pin_execution_device

    class HostCopies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
                src = args[0] if func is torch.ops.aten._to_copy.default else args[1]
                dst = kwargs.get("device") if func is torch.ops.aten._to_copy.default else args[0].device
                if src.device.type == "cpu" and dst is not None and torch.device(dst).type == "meta":
                    self.seen.append(tuple(src.shape))
            return func(*args, **kwargs)

    cfg = TrialConfig.from_dict({**BASE, "model": model, "scheduler": sampler, "cfg_cutoff": 0.5})
    pipe, _ = build_pipeline(cfg, CPU)
    meta = torch.device("meta")
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).to(meta)
    pin_execution_device(pipe, meta)
    recorder = _loop.record_calls(pipe)
    width = pipe.unet.config.cross_attention_dim
    embeds = {"prompt_embeds": torch.empty(2, 77, width, device=meta),
              "negative_prompt_embeds": torch.empty(2, 77, width, device=meta)}
    if model == "tiny-sdxl":
        pooled = pipe.text_encoder_2.config.projection_dim
        embeds.update(pooled_prompt_embeds=torch.empty(2, pooled, device=meta),
                      negative_pooled_prompt_embeds=torch.empty(2, pooled, device=meta))
    noise = torch.empty(2, pipe.unet.config.in_channels, 4, 4, device=meta)

    def call():
        pipe.scheduler = copy.deepcopy(pipe.scheduler)  # a fresh sampler each call, as the scheduler knob gives
        recorder._call = {"height": 32, "width": 32, "output_type": "pt", **knobs.call(pipe, cfg)}
        with HostCopies() as watch:
            out = recorder._denoise_and_decode(("key",), embeds, noise)
        assert out.is_meta and out.shape[:2] == (2, 3)
        return watch.seen

    call()  # sets the schedule (its copy to the device happens here, before any recording)
    assert call() == []
    recorder.schedules.clear()
    assert call() != []  # the watch sees the timesteps' copy when the schedule is set again


def test_the_compile_knob_records_whole_calls_under_loop_captured():
    """The knob's wiring without a GPU: UNet and decoder compiled as under unet+vae, the text encoder recorded, the
    pipeline's calls routed through the recorder under the knobs' call-time settings, the row naming what it
    records."""
    from workbench.knobs import _loop
    from workbench.knobs import compile as knob
    from workbench.knobs._captured import CapturedForward
    from workbench.models import tiny_random_pipeline

    pipe = tiny_random_pipeline()
    cfg = _cfg(compile="default", compile_scope="loop-captured", cfg_cutoff=0.5)
    row = knob.apply(pipe, cfg, CPU)
    assert row.protocols["compile"]["recorded_by_torch_cuda_graph"] == ["text_encoder", "loop"]
    assert type(pipe.unet).__name__ == "OptimizedModule" and isinstance(pipe.text_encoder.forward, CapturedForward)
    assert type(pipe).__name__ == "StableDiffusionPipeline" and _loop.recorder_of(pipe) is not None
    key = dict(knob.call(pipe, cfg)[_loop.KEY])
    assert key["steps"] == 3 and key["cfg_cutoff"] == 0.5 and key["scheduler"] == "dpm++2m" and "seeds" not in key
    assert knob.observe(pipe, cfg).protocols["compile_captured_graphs"] == {
        "text_encoder": {"graphs": 0, "replays": 0}, "loop": {"graphs": 0, "replays": 0}}


def test_a_recorded_pipeline_has_its_flops_counted_from_its_eager_code(monkeypatch):
    """A replay runs no operator torch's FlopCounterMode can see, so a row's gflops_per_image, counted from one more
    call with everything compiled run eagerly, came out 0 under loop-captured: the compile knob's `eager()` now runs
    the recorded call and the recorded text encoder plainly, and the count is the plain pipeline's."""
    from workbench.knobs import _loop
    from workbench.models import tiny_random_pipeline
    from workbench.trial import model_cost, plan

    call = knobs.call
    monkeypatch.setattr(knobs, "call", lambda p, c: {**call(p, c), _loop.KEY: (("steps", 3),)})
    cfg = _cfg()
    plain = tiny_random_pipeline()
    expected = model_cost(plain, cfg, plan(cfg, plain), CPU)[0]["gflops_per_image"]
    pipe = tiny_random_pipeline()
    recorder = _replayed_loop(pipe, rerun=False)  # replays run nothing, as on a GPU
    pipe.text_encoder.forward = encoder = _cpu_replayed(rerun=False)(pipe.text_encoder.forward, "text_encoder")
    generate(pipe, cfg, PROMPTS, [0, 1], 32, CPU)  # recorded once, then replayed
    assert (recorder.graphs.replays, encoder.replays) == (1, 2)
    assert model_cost(pipe, cfg, plan(cfg, pipe), CPU)[0]["gflops_per_image"] == expected > 0
    assert (recorder.graphs.replays, encoder.replays) == (1, 2)  # counted from the eager code, not from replays


def test_stages_inside_a_recorded_call_are_timed_by_the_events_it_recorded(monkeypatch, tmp_path):
    """The stage timer's hooks run while a call is recorded and put timing events into the graph (external CUDA
    events, recorded again by every replay; wall-clock ones here): each replay, which runs no hook, counts the
    UNet's calls (batch 2 while guided, 1 after the CFG cutoff) and the decode with those events' times. A call
    recorded before any timer existed has no events: its stages are absent from the row, with the reason."""
    from workbench.knobs import _loop
    from workbench.models import tiny_random_pipeline
    from workbench.trial import generate_and_time, plan

    call = knobs.call
    monkeypatch.setattr(knobs, "call", lambda p, c: {**call(p, c), _loop.KEY: (("steps", 3),)})
    cfg = _cfg(cfg_cutoff=0.5, timing_repeats=2)
    pipe = tiny_random_pipeline()
    recorder = _replayed_loop(pipe, rerun=False)  # replays run nothing of the pipeline, as on a GPU
    (tmp_path / "a" / "images").mkdir(parents=True)
    metrics, _, absent = generate_and_time(pipe, cfg, plan(cfg, pipe), tmp_path / "a", CPU, progress=False)
    assert recorder.graphs.replays == 3  # the warm-up batch and two timed ones, each one replay
    assert metrics["unet_calls"] == 3 and metrics["unet_step_s"] > 0 and metrics["vae_decode_s"] > 0
    assert metrics["text_encoder_s"] > 0 and "unet_s" not in absent

    early = tiny_random_pipeline()
    _replayed_loop(early, rerun=False)
    generate(early, cfg, PROMPTS, [0, 1], 32, CPU)  # recorded with no stage timer about
    (tmp_path / "b" / "images").mkdir(parents=True)
    metrics, _, absent = generate_and_time(early, cfg, plan(cfg, early), tmp_path / "b", CPU, progress=False)
    for name in ("unet_s", "unet_step_s", "unet_calls", "vae_decode_s"):
        assert metrics[name] is None and "recorded CUDA graph" in absent[name]


def test_text_encoders_read_nothing_back_from_their_tensors():
    """What a CUDA-graph capture cannot hold is a host read of a tensor's values (`.item()`, `bool(t)`, `nonzero`): on
    the meta device, which has no values, SDXL's two text encoders as the pipeline calls them must run through."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=100, bos_token_id=0, eos_token_id=2, projection_dim=16)
    for cls in (CLIPTextModel, CLIPTextModelWithProjection):
        with torch.device("meta"):
            encoder = cls(config).eval()
        with torch.no_grad():
            out = encoder(torch.randint(3, 99, (1, 77), device="meta"), output_hidden_states=True)
        assert out.hidden_states[-2].is_meta and len(out.hidden_states) == 3


@pytest.mark.parametrize("values, field, hint", [
    ({"compile": "reduce-overhead"}, "compile", "CUDA graphs"),
    ({"compile": "default", "compile_scope": "all-captured"}, "compile_scope", "CUDA graphs"),
    ({"compile": "default", "compile_scope": "blocks-captured"}, "compile_scope", "CUDA graphs"),
    ({"compile": "default", "compile_scope": "loop-captured"}, "compile_scope", "CUDA graphs"),
    ({"cudnn_benchmark": True}, "cudnn_benchmark", "CUDA devices"),
    ({"attention": "flash"}, "attention", "CUDA kernel"),
    ({"torchao": "fp8-dynamic-row", "precision": "bf16"}, "torchao", "compute capability 8.9"),
    ({"torchao": "fp8-dynamic-tensor", "precision": "bf16"}, "torchao", "compute capability 8.9"),
    ({"torchao": "fp8-static", "precision": "bf16"}, "torchao", "compute capability 8.9"),
])
def test_what_a_cpu_cannot_run_is_one_line_before_anything_is_built(values, field, hint, refused_sweep):
    cfg = _cfg(**values)  # a valid configuration...
    with pytest.raises(ConfigError) as err:
        knobs.check_device(cfg, CPU)  # ...that this device cannot run
    assert err.value.args[0].startswith(field) and hint in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=hint):
        run_trial(cfg, progress=False)
    fixed = ", ".join(f"{k}: {v}" for k, v in values.items())
    refused_sweep(fixed, hint)  # `workbench sweep`: one line, no store, nothing built


@pytest.mark.parametrize("values, field, hint", [
    ({"compile": "default", "backend": "onnxruntime"}, "compile", "backend onnxruntime"),
    ({"attention": "math", "backend": "onnxruntime"}, "attention", "backend onnxruntime"),
    ({"fuse_qkv": True, "backend": "onnxruntime"}, "fuse_qkv", "backend onnxruntime"),
    ({"torchao": "int8-dynamic", "quant": "ptq", "backend": "onnxruntime"}, "torchao", "Pick one"),
    ({"torchao": "fp8-dynamic-row"}, "precision", "bf16"),
    ({"torchao": "fp8-dynamic-tensor", "precision": "fp16"}, "precision", "bf16"),
    ({"compile": "reduce-overhead", "compile_scope": "blocks"}, "compile_scope", "regional"),
    ({"compile": "default", "compile_scope": "all-graphed"}, "compile_scope", "reduce-overhead"),
    ({"compile": "reduce-overhead", "compile_scope": "blocks-captured"}, "compile_scope", "recorded inside another"),
    ({"compile": "default", "compile_scope": "blocks-captured", "cache_interval": 2}, "compile_scope",
     "feature caching"),
    ({"compile": "reduce-overhead", "compile_scope": "loop-captured"}, "compile_scope", "recorded inside another"),
    ({"compile": "default", "compile_scope": "loop-captured", "early_stop_tol": 0.05}, "compile_scope",
     "early_stop_tol: 0"),
    ({"compile": "default", "compile_scope": "loop-captured", "scheduler": "euler-a"}, "scheduler", "dpm++2m"),
    ({"compile": "default", "compile_scope": "loop-captured", "model": "tiny-sdxl", "precision": "fp16"},
     "vae_upcast", "vae_upcast: fp32"),
    ({"compile": "fast"}, "compile", "not one of"),
    ({"compile_tuning": "tuned"}, "compile_tuning", "compile is none"),
    ({"compile_cache": "precompile"}, "compile_cache", "compile is none"),
    ({"compile": "default", "compile_cache": "dynamo"}, "compile_cache", "not one of"),
    ({"compile": "default", "compile_tuning": "max"}, "compile_tuning", "not one of"),
    ({"cudnn_benchmark": True, "backend": "onnxruntime"}, "cudnn_benchmark", "backend onnxruntime"),
    ({"attention": "xformers"}, "attention", "not one of"),
])
def test_bad_runtime_values_are_one_clear_line(values, field, hint, refused_config):
    refused_config(values, field, hint)


def test_a_sampled_combination_the_device_cannot_run_is_skipped_not_run(tmp_path):
    """A search space offering CUDA graphs on a CPU host: those trials are skipped with the reason (not counted, no
    row), the others run."""
    from workbench.study import experiment
    from workbench.study.store import Store
    from workbench.study.sweep import sweep

    path = tmp_path / "rt.yaml"
    path.write_text(textwrap.dedent(f"""
        name: rt
        model: tiny-random
        fixed: {{seeds: "0-1", steps: 2, batch_size: 2, timing_repeats: 1, quality: false}}
        search_space:
          compile: [none, reduce-overhead]
          channels_last: [false, true]
        objectives: {{latency_s: minimize}}
        sampler: {{name: RandomSampler, seed: 0}}
        n_trials: 3
        storage: sqlite:///{tmp_path / 'rt.db'}
        executor: inprocess
    """))
    lines = []
    study = sweep(experiment.load(path), progress=False, echo=lines.append)
    rows = Store(f"sqlite:///{tmp_path / 'rt.db'}").rows("rt")
    assert len(rows) == 3 and all(r["config"]["compile"] == "none" and r["status"] == "ok" for r in rows)
    skipped = [t for t in study.trials if t.user_attrs.get("invalid")]
    assert skipped and all("CUDA graphs" in t.user_attrs["reason"] for t in skipped)
