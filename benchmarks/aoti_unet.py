"""Can AOTInductor take Dynamo out of a second compile? The UNet of a preset (fp16, channels_last, fused QKV) exported
once (`torch.export`, non-strict), compiled ahead of time into a package (`torch._inductor.aoti_compile_and_package`),
then loaded in a fresh process (`aoti_load_package`), checked against eager, timed, and replayed as a CUDA graph.

    python benchmarks/aoti_unet.py sd15-random build results/aot/sd15.pt2   # export + compile, then the load steps
    python benchmarks/aoti_unet.py sd15-random load results/aot/sd15.pt2    # a fresh process: load, check, time

`DEVICE=cpu` runs it on a CPU (fp32, no CUDA graph). By default the weights stay out of the package
(`aot_inductor.package_constants_in_so: False`) and are handed to the loaded model (`load_constants`; `UM=1`:
user-managed, no copy); `PKG=1` packages them. A feasibility probe, not wired into the compile knob: on an H100 with
torch 2.11 the load crashed, SD1.5's and the tiny SDXL UNet's alike (docs/gpu.md, `docs/gpu-data/aoti-sd15-h100.txt`,
`docs/gpu-data/aoti-tiny-sdxl-h100.txt`).
"""
import json
import os
import sys
import time

import torch


def main() -> None:
    import faulthandler

    import diffusers

    from workbench.presets import PRESETS

    faulthandler.enable()  # a crash inside the loaded library prints where it happened
    name, phase, path = sys.argv[1], sys.argv[2], sys.argv[3]
    device = torch.device(os.environ.get("DEVICE", "cuda"))
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    t0 = time.perf_counter()
    with torch.device(device):
        torch.manual_seed(0)
        unet = diffusers.UNet2DConditionModel(**PRESETS[name].unet)
    unet = unet.to(dtype).to(memory_format=torch.channels_last).eval()
    unet.fuse_qkv_projections()
    c = unet.config
    side = c.sample_size
    x = torch.randn(2, c.in_channels, side, side, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    t = torch.tensor(999.0, device=device)
    ehs = torch.randn(2, 77, c.cross_attention_dim, device=device, dtype=dtype)
    kw = {"encoder_hidden_states": ehs, "return_dict": False}
    if c.addition_embed_type == "text_time":
        pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(2, pooled, device=device, dtype=dtype),
                                   "time_ids": torch.randn(2, 6, device=device, dtype=dtype)}
    print("model", time.perf_counter() - t0, flush=True)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timeit(f, n=50):
        for _ in range(5):
            f()
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        sync()
        return (time.perf_counter() - t0) / n * 1e3

    res = {"device": str(device), "torch": torch.__version__}
    packaged = os.environ.get("PKG") == "1"
    with torch.no_grad():
        if phase == "build":
            t0 = time.perf_counter()
            ep = torch.export.export(unet, (x, t), kw, strict=False)
            res["export_s"] = time.perf_counter() - t0
            print(res, flush=True)
            t0 = time.perf_counter()
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # torch refuses a missing folder
            torch._inductor.aoti_compile_and_package(
                ep, package_path=path,
                inductor_configs={} if packaged else {"aot_inductor.package_constants_in_so": False})
            res["aoti_s"] = time.perf_counter() - t0
            res["size"] = os.path.getsize(path)
            print(res, flush=True)
        t0 = time.perf_counter()
        m = torch._inductor.aoti_load_package(path)
        print("loaded", time.perf_counter() - t0, flush=True)
        if not packaged:
            weights = {**dict(unet.named_parameters()), **dict(unet.named_buffers())}
            m.load_constants({k: weights[k] for k in m.get_constant_fqns()}, check_full_update=True,
                             user_managed=os.environ.get("UM") == "1")
        print("constants", time.perf_counter() - t0, flush=True)
        out = m(x, t, **kw)[0]
        sync()
        res["load_first_call_s"] = time.perf_counter() - t0
        ref = unet(x, t, **kw)[0]
        res["max_abs_diff"] = float((out - ref).abs().max())
        res["eager_ms"] = timeit(lambda: unet(x, t, **kw))
        res["aoti_ms"] = timeit(lambda: m(x, t, **kw))
        if cuda:  # the loaded model's kernels recorded as one CUDA graph, as reduce-overhead records Inductor's
            t0 = time.perf_counter()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    m(x, t, **kw)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                static = m(x, t, **kw)
            res["capture_s"] = time.perf_counter() - t0
            g.replay()
            sync()
            res["graph_diff"] = float((static[0] - ref).abs().max())
            res["aoti_graph_ms"] = timeit(g.replay)
    print("RES", json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
