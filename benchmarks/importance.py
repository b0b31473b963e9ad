"""Layer importance of the reference model by both methods: figure in network (execution) order and rank correlation.

    python -m benchmarks.importance --out docs/importance_layers.png --json docs/quantization-data/importance.json

Both scores come from the artifact cache through the quant knob's path (`calibration` captured from a real pipeline
run, then `importance(pipe, method, ...)`), for every Conv2d / Linear of the UNet, the text encoder and the VAE
decoder except the always-float timestep path. Printed per component: number of layers, Spearman's rho between
`actgrad` and `sensitivity` (with its p-value), the overlap of their top 10 % and top 20 %, the top five of each,
and the build cost of each ranking.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.compress.specs import COMPONENTS


def execution_order(pipe, component: str, calib, names: list[str]) -> list[str]:
    """The layers in the order one forward pass calls them (diffusers registers the mid block after the up blocks)."""
    import torch

    from workbench.compress import export

    module, order = export.module_of(pipe, component), []
    handles = [module.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: order.append(n)) for n in names]
    with torch.no_grad():
        export.adapter(pipe, component)(*calib.inputs(component)[0])
    for h in handles:
        h.remove()
    seen = list(dict.fromkeys(order))
    return seen + [n for n in names if n not in seen]


def main(argv=None) -> None:
    import matplotlib.pyplot as plt
    import numpy as np
    from scipy.stats import spearmanr

    from workbench.compress import calibration, importance
    from workbench.models import load_pipeline
    from workbench.prompts import load_prompts, prompt_set_version
    from workbench.report.style import PAPER, save_figure

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="reference")
    p.add_argument("--out", type=Path, default=Path("docs/importance_layers.png"))
    p.add_argument("--json", type=Path, default=Path("results/importance.json"))
    args = p.parse_args(argv)
    pipe = load_pipeline(args.model)
    calib = calibration.calibration(pipe, load_prompts("world-v1"), prompt_set_version("world-v1"), progress=True)
    methods = ("actgrad", "sensitivity")
    ranked = {m: importance.importance(pipe, m, calib, COMPONENTS, progress=True) for m in methods}
    summary = {"calibration": calib.key, "calibration_s": calib.build_s,
               "cost_s": {m: ranked[m]["importance_s"] for m in methods}, "components": {}}
    plt.rcParams.update(PAPER)
    fig, axes = plt.subplots(len(COMPONENTS), 1, figsize=(7.0, 5.4))
    for ax, component in zip(axes, COMPONENTS):
        a, s = (ranked[m]["scores"][component] for m in methods)
        names = execution_order(pipe, component, calib, list(a))
        rho, pval = spearmanr([a[n] for n in names], [s[n] for n in names])
        top = {}
        for frac in (0.1, 0.2):
            ta, ts = (set(importance.most_important(r, frac)) for r in (a, s))
            top[f"top{int(frac * 100)}_overlap"] = f"{len(ta & ts)} of {len(ta)}"
        summary["components"][component] = {
            "layers": len(names), "spearman_rho": float(rho), "p_value": float(pval), **top,
            "top5": {m: sorted(names, key=lambda n, r=ranked[m]["scores"][component]: -r[n])[:5] for m in methods},
            "scores": {m: ranked[m]["scores"][component] for m in methods}}
        x = np.arange(len(names))
        for m, marker, colour in (("actgrad", "o", "C0"), ("sensitivity", "s", "C3")):
            v = np.array([ranked[m]["scores"][component][n] for n in names])
            ax.semilogy(x, v / v.max(), marker=marker, ms=2, lw=0.6, color=colour, label=m)
        ax.set_title(f"{component}: {len(names)} layers, Spearman rho = {rho:.2f}")
        ax.set_ylabel("score / max")
        step = max(1, len(names) // 12)
        ax.set_xticks(x[::step])
        ax.set_xticklabels([names[i] for i in x[::step]], rotation=30, ha="right", fontsize=4)
        c = summary["components"][component]
        print(f"{component:13s} layers {len(names):4d}  Spearman rho {rho:+.3f} (p={pval:.1e})  "
              f"top-10% overlap {c['top10_overlap']}  top-20% overlap {c['top20_overlap']}")
        for m in methods:
            print(f"   top 5 by {m:11s}: {', '.join(c['top5'][m])}")
    axes[0].legend(frameon=False)
    fig.suptitle(f"Layer importance of the {args.model} model in network order (timestep path excluded: always float)",
                 fontsize=8)
    fig.tight_layout()
    save_figure(fig, args.out)
    print(f"cost: calibration {calib.build_s:.0f} s (once), " +
          ", ".join(f"{m} {ranked[m]['importance_s']:.0f} s" for m in methods))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out} (+ .svg, .pdf) and {args.json}")


if __name__ == "__main__":
    main()
