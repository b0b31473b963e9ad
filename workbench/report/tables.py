"""Tables and captions from study rows: the Pareto set as markdown and LaTeX, N captions, spread legends."""
from __future__ import annotations

from dataclasses import fields

import pandas as pd

from workbench.config import TrialConfig, parse_seeds
from workbench.metrics import SPREADS


def image_counts(ok: pd.DataFrame) -> pd.Series:
    """Images per trial (the length of each row's seed list)."""
    return ok["seeds"].map(lambda s: len(parse_seeds(s)))


def by_image_count(ok: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Rows grouped by images per trial: {"": rows} for one N, {"_N16": ..., "_N64": ...} for several."""
    if "seeds" not in ok:
        return {"": ok}
    n = image_counts(ok)
    if n.nunique() <= 1:
        return {"": ok}
    return {f"_N{k}": ok[n == k] for k in sorted(n.unique())}


def n_caption(ok: pd.DataFrame) -> str:
    """How many images each trial measured: quality numbers compare only at equal N."""
    ns = sorted(image_counts(ok).unique()) if "seeds" in ok else []
    return "N = " + ", ".join(f"{n:,}" for n in ns) + " images per trial" if ns else "N unknown"


def spread_legend(metrics: list[str]) -> str:
    words = {"fid": "FID [95 % bootstrap interval]", "kid": "KID ± sd over subsets", "cmmd": "CMMD ± sd over subsets",
             "clip_score": "CLIP score ± standard error", "align_mean": "alignment [95 % interval]",
             "psnr": "PSNR ± standard error", "ssim": "SSIM ± standard error"}
    return "; ".join(words.get(m, m) for m in metrics if m in SPREADS) or "none"


def knob_columns(frame: pd.DataFrame) -> list[str]:
    """Configuration fields that vary across the rows (the scheduler, steps and CFG scale when none does)."""
    names = [f.name for f in fields(TrialConfig) if f.name in frame]
    varying = [n for n in names if frame[n].astype(str).nunique() > 1]
    return varying or [n for n in ("scheduler", "steps", "cfg_scale") if n in frame]


def short_label(r) -> str:
    """A point's label on a figure: scheduler, steps, CFG scale, and the compression knobs where the trial uses them."""
    parts = [str(r.get("scheduler", ""))]
    if "steps" in r:
        parts.append(f"{int(r['steps'])} st")
    if "cfg_scale" in r:
        parts.append(f"cfg {r['cfg_scale']:.3g}")
    ratio = r.get("prune_ratio")
    if ratio and ratio == ratio:  # compression knobs, where the trial uses them (NaN: a study without them)
        parts.append(f"prune {ratio:g}")
    if isinstance(r.get("quant"), str) and r["quant"] != "none":
        parts.append(str(r["quant"]).upper() + (f" keep {r['quant_keep']:g}" if r.get("quant_keep") else ""))
    return " ".join(parts)


def latex_table(frame: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (\\toprule, \\midrule, \\bottomrule) with the caption above, ready for \\input."""
    def tex(v) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                     ("±", r"$\pm$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("Δ", r"$\Delta$")):
            text = text.replace(a, b)
        return text

    rows = [" & ".join(tex(c) for c in frame.columns) + r" \\"]
    rows += [" & ".join(tex(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{tex(caption)}}}",
                      f"\\label{{{label}}}", r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule",
                      rows[0], r"\midrule", *rows[1:], r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def markdown_table(frame: pd.DataFrame, caption: str) -> str:
    """The caption, then a GitHub-flavoured markdown table."""
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in frame.itertuples(index=False))
    return f"{caption}\n\n{head}{body}"
