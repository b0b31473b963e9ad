"""Explorer latency: press Generate after changing a call-time knob -> the 16 images on screen (and the metrics).

    .venv/bin/python -m benchmarks.explore_latency                 # the widgets in this process (kernel side)
    .venv/bin/python -m benchmarks.explore_latency --browser       # JupyterLab + headless Chromium, end to end

The bundled reference model, 16 images (seeds 0-15, batch 8), quality on, the explorer's defaults otherwise
(DPM++ 2M, 25 steps). The first press builds the pipeline, generates the baseline and loads the quality networks:
it is reported on its own. Every timed press changes the CFG scale to a value not used before (no cache can
answer it). Prints the median, interquartile range and N of press -> images shown and press -> metrics shown, the
split (generate, display, quality) and the load average, since the CPU may be shared.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def _iqr(values: list[float]) -> float:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q[2] - q[0]


def _summary(name: str, values: list[float]) -> str:
    return f"{name}: median {statistics.median(values):.2f} s, IQR {_iqr(values):.2f} s, N = {len(values)}"


def kernel_side(args) -> dict[str, list[float]]:
    """The widgets' own handlers in this process: button.click() runs what the kernel runs on a click."""
    from workbench.lab.explore import Explorer

    explorer = Explorer(model="reference", seeds=args.seeds, batch_size=args.batch_size, steps=args.steps,
                        quality=True)
    shown: list[float] = []
    explorer.diff_image.observe(lambda _: shown.append(time.perf_counter()), names="value")  # the last sheet set
    t0 = time.perf_counter()
    explorer.generate_button.click()
    print(f"first press (build, baseline, quality networks): {time.perf_counter() - t0:.1f} s; "
          f"{explorer.timing.value}")
    out: dict[str, list[float]] = {k: [] for k in ("images", "metrics", "generate", "display", "quality")}
    for i in range(args.repeats):
        explorer.controls["cfg_scale"].value = round(7.0 - 0.25 * i, 2)
        shown.clear()
        t0 = time.perf_counter()
        explorer.generate_button.click()
        t1 = time.perf_counter()
        assert explorer.shot is not None and not explorer.shot.rebuilt, explorer.status.value
        t = explorer.shot.timings
        out["images"].append(shown[0] - t0)
        out["metrics"].append(t1 - t0)
        for k in ("generate", "display", "quality"):
            out[k].append(t[f"{k}_s"])
        print(f"  press {i + 1}: images {shown[0] - t0:.2f} s, metrics {t1 - t0:.2f} s ({explorer.timing.value})")
    return out


def browser_side(args) -> dict[str, list[float]]:
    """JupyterLab in headless Chromium: click Generate, wait until the new sheets are decoded on the page."""
    import re
    import sys
    import tempfile
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo / "tests"))
    from test_lab import CHROMIUM, CHROMIUM_ARGS, open_and_run_all, prepare_notebook, start_lab

    out: dict[str, list[float]] = {k: [] for k in ("images", "metrics", "generate", "display", "quality")}
    with tempfile.TemporaryDirectory(prefix="explore-bench-") as tmp:
        root = Path(tmp)
        prepare_notebook(root / "explore.ipynb", model="reference", seeds=args.seeds, batch_size=args.batch_size,
                         quality=True, start=f"{{steps: {args.steps}}}", baseline="{}",
                         storage=f"sqlite:///{root / 'results' / 'workbench.db'}")
        env = {**os.environ, "WORKBENCH_RESULTS": str(root / "results"),
               "PYTHONPATH": os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])}
        server, url = start_lab(root, env, root / "jupyter.log")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1500, "height": 1400})
                generate = open_and_run_all(page, url.format(path="explore.ipynb")).first
                images = ("() => [...document.querySelectorAll('.widget-image')]"
                          ".filter(i => i.complete && i.naturalWidth > 0).length >= 3")
                t0 = time.perf_counter()
                generate.click()
                page.wait_for_function(images, timeout=600_000)
                page.locator(".wb-metrics").first.wait_for(timeout=600_000)
                print(f"first press in the browser (build, baseline, quality networks): "
                      f"{time.perf_counter() - t0:.1f} s")
                cfg = page.locator(".widget-inline-hbox", has_text="cfg_scale").locator("input").first
                for i in range(args.repeats):
                    cfg.fill(str(round(7.0 - 0.25 * i, 2)))
                    cfg.press("Enter")
                    old = page.locator(".widget-image").nth(2).get_attribute("src")
                    page.locator(".widget-html-content", has_text="ready").first.wait_for(timeout=300_000)
                    t0 = time.perf_counter()
                    generate.click()
                    page.wait_for_function(
                        "old => { const i = document.querySelectorAll('.widget-image')[2];"
                        " return i.src !== old && i.complete && i.naturalWidth > 0; }", arg=old, timeout=300_000)
                    t1 = time.perf_counter()
                    page.locator(".widget-html-content", has_text="ready").first.wait_for(timeout=300_000)
                    page.locator(".wb-metrics").first.wait_for(timeout=300_000)
                    t2 = time.perf_counter()
                    line = page.locator(".widget-html-content", has_text="generate").first.inner_text()
                    numbers = {k: float(v) for k, v in re.findall(r"(generate|display|quality) ([\d.]+) s", line)}
                    out["images"].append(t1 - t0)
                    out["metrics"].append(t2 - t0)
                    for k in ("generate", "display", "quality"):
                        out[k].append(numbers[k])
                    print(f"  press {i + 1}: images {t1 - t0:.2f} s, metrics {t2 - t0:.2f} s ({line})")
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=60)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--browser", action="store_true", help="JupyterLab + headless Chromium, end to end")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seeds", default="0-15")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=25)
    args = p.parse_args()
    import torch

    load_before = os.getloadavg()
    out = browser_side(args) if args.browser else kernel_side(args)
    load_after = os.getloadavg()
    where = "browser (JupyterLab + headless Chromium)" if args.browser else "kernel side (widgets in this process)"
    print(f"\nexplorer latency, {where}: reference model, 16 images at {args.steps} steps, CFG scale changed; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(_summary("press -> images shown ", out["images"]))
    print(_summary("press -> metrics shown", out["metrics"]))
    print("split (medians): " + ", ".join(f"{k} {statistics.median(out[k]):.2f} s"
                                          for k in ("generate", "display", "quality")))
    print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    goal = statistics.median(out["images"]) < 5.0
    print(f"goal (images under 5 s): {'met' if goal else 'missed'}")


if __name__ == "__main__":
    main()
