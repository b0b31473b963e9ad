"""The confirmed front drawn over the sweep's, and the confirmation as a table (points measured by
`workbench.study.confirm`; read from `<study>-confirm`, never measured here).

Both axes are relative to the baseline: speed-up (baseline latency / the point's) and the change of each quality
metric. A sweep point's position comes from its single trial (N of the sweep, timed once, at another moment than
the baseline); a confirmed point's from interleaved rounds and a paired difference on held-out seeds, each with its
95 % interval. An arrow joins the two: how far the sweep's estimate moved.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from workbench.metrics import METRICS, with_spread
from workbench.report.front import losses, pareto_mask
from workbench.report.style import COLUMN_IN, PAPER, plt, save_figure, wrap
from workbench.report.tables import knob_columns, latex_table, markdown_table, n_caption
from workbench.study import confirm

COLOURS = {confirm.FASTER_EQUAL: "tab:green", confirm.TRADE_OFF: "tab:orange", confirm.SLOWER: "tab:red",
           confirm.NOT_RESOLVED: "0.45"}


def settings_of(confirmed: pd.DataFrame) -> dict:
    """The settings the confirmation was judged with (the latest row's)."""
    return confirmed["protocols"].iloc[-1]["confirm"]["settings"]


def metrics_of(confirmed: pd.DataFrame) -> list[str]:
    """The quality differences to show: those with a tolerance first, then the rest measured, at most three."""
    measured = confirm.quality_columns(confirmed)
    tolerated = [m for m in settings_of(confirmed)["tolerance"] if m in measured]
    return list(dict.fromkeys(tolerated + measured))[:3]


def caption(confirmed: pd.DataFrame, study: str) -> str:
    s = settings_of(confirmed)
    tol = ", ".join(f"{m} {v:g}" for m, v in s["tolerance"].items()) or "none stated"
    seeds = confirmed["protocols"].iloc[0]["confirm"]["seeds"]
    return (f"Confirmation of {study} ({confirm.study_name(study)}): each point and the baseline again on held-out "
            f"seeds {seeds} (N = {s['n']:,} images each), timed against the baseline in {s['rounds']} interleaved "
            f"rounds. Speed-up: median of per-round ratios [95 % order-statistic interval]; Δ: candidate - baseline "
            f"on the same seeds and prompts [95 % paired bootstrap interval]. Faster means the interval lies above "
            f"{s['speedup']:g}x; tolerances: {tol}. The baseline's row is its A/A control (a second build of it).")


def table(confirmed: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The confirmation as printed: trial, knobs, speed-up and latencies, each paired difference, verdict."""
    knobs = [c for c in knob_columns(confirmed) if c != "seeds"]
    out = confirmed[["trial"] + knobs].copy()
    out["speed-up"] = [with_spread(r, "speedup", 3) for _, r in confirmed.iterrows()]
    out["latency_s (baseline)"] = [f"{r['latency_interleaved_s']:.4g} ({r['baseline_latency_interleaved_s']:.4g})"
                                   for _, r in confirmed.iterrows()]
    for m in metrics:
        out[f"Δ {m}"] = [_signed(r, f"delta_{m}") for _, r in confirmed.iterrows()]
    out["verdict"] = confirmed["verdict"]
    return out


def _signed(row, name: str) -> str:
    if name not in row or row[name] != row[name]:
        return ""
    return f"{row[name]:+.3g} [{row[f'{name}_lo']:+.3g}, {row[f'{name}_hi']:+.3g}]"


def sweep_relative(ok: pd.DataFrame, baseline: int | None, metrics: list[str]) -> pd.DataFrame:
    """The sweep's trials on the confirmation's axes: speed-up and quality change against the sweep's baseline."""
    if baseline is None or baseline not in set(ok["trial"]):
        return ok[:0]
    b = ok[ok["trial"] == baseline].iloc[0]
    out = pd.DataFrame({"trial": ok["trial"], "speedup": b["latency_s"] / ok["latency_s"]})
    for m in metrics:
        if m in ok:
            out[f"delta_{m}"] = ok[m] - b[m]
    return out.reset_index(drop=True)


def plot_confirmed(confirmed: pd.DataFrame, sweep: pd.DataFrame, metrics: list[str], path: Path, study: str,
                   sweep_n: str) -> Path:
    """One panel per quality metric: speed-up against its paired change, the sweep's points and front faint, the
    confirmed points with both intervals, coloured by verdict, an arrow from each sweep estimate to its confirmation."""
    s = settings_of(confirmed)
    plt.rcParams.update(PAPER)
    fig, axes = plt.subplots(1, len(metrics), figsize=(COLUMN_IN * min(2, len(metrics)), 3.0), squeeze=False,
                             layout="constrained")
    for ax, m in zip(axes[0], metrics):
        d = f"delta_{m}"
        tol = s["tolerance"].get(m)
        sign = 1.0 if METRICS[m].better == "minimize" else -1.0
        if tol is not None:  # where quality counts as equal: at most `tol` worse
            ax.axhline(sign * tol, color="tab:green", lw=0.6, ls="--", label="tolerance (worse side)")
            ax.annotate(f"tolerance {tol:g}", (1.0, sign * tol), xycoords=("axes fraction", "data"), fontsize=5,
                        color="tab:green", ha="right", va="bottom" if sign > 0 else "top")
        ax.axvline(s["speedup"], color="0.5", lw=0.6, ls=":", label=f"smallest speed-up claimed ({s['speedup']:g}x)")
        ax.axhline(0.0, color="0.7", lw=0.5)
        if d in sweep:
            pts = sweep.dropna(subset=[d])
            ax.scatter(pts["speedup"], pts[d], s=10, facecolors="none", edgecolors="0.6", lw=0.6,
                       label=f"sweep ({sweep_n}, timed once)")
            front = pts[pareto_mask(losses(pts, ["speedup", d]))].sort_values("speedup")
            ax.plot(front["speedup"], front[d], color="0.6", lw=0.8, ls="--", drawstyle="steps-pre")
        rows = confirmed.dropna(subset=[d]) if d in confirmed else confirmed[:0]
        if len(rows):
            front = rows[pareto_mask(losses(rows, ["speedup", d]))].sort_values("speedup")
            ax.plot(front["speedup"], front[d], color="tab:blue", lw=1.0, drawstyle="steps-pre",
                    label="confirmed front")
        by_trial = sweep.set_index("trial") if d in sweep else None
        for verdict, colour in COLOURS.items():
            group = rows[rows["verdict"] == verdict]
            if group.empty:
                continue
            xerr = np.array([group["speedup"] - group["speedup_lo"], group["speedup_hi"] - group["speedup"]])
            yerr = np.array([group[d] - group[f"{d}_lo"], group[f"{d}_hi"] - group[d]])
            ax.errorbar(group["speedup"], group[d], xerr=xerr.clip(0), yerr=yerr.clip(0), fmt="o", ms=3.2,
                        color=colour, elinewidth=0.8, capsize=1.5, label=verdict)
        for _, r in rows.iterrows():
            ax.annotate(f"#{int(r['trial'])}", (r["speedup"], r[d]), fontsize=5, xytext=(2, 2),
                        textcoords="offset points")
            if by_trial is not None and r["trial"] in by_trial.index:
                was = by_trial.loc[r["trial"]]
                ax.annotate("", (r["speedup"], r[d]), (was["speedup"], was[d]),
                            arrowprops={"arrowstyle": "->", "color": "0.55", "lw": 0.5})
        arrow = "↓" if METRICS[m].better == "minimize" else "↑"
        ax.set_xlabel("speed-up vs baseline (↑ better)")
        ax.set_ylabel(wrap(f"Δ {METRICS[m].label} vs baseline ({arrow} better)", 2.2))
        ax.grid(alpha=0.3, lw=0.4)
    legend = {}  # one legend for every panel, below them, so that none hides a point
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=3, fontsize=5, frameon=False)
    fig.suptitle(wrap(f"{study}: confirmed on held-out seeds (N = {s['n']:,}, {s['rounds']} interleaved rounds) "
                      f"over the sweep ({sweep_n})", COLUMN_IN * min(2, len(metrics)) - 0.2), fontsize=7)
    return save_figure(fig, path)


def write_confirm(study: str, storage: str, ok: pd.DataFrame, baseline: int | None, out_dir: Path) -> dict[str, Path]:
    """The confirmed-front figure (PNG, SVG, PDF) and table (CSV, markdown, LaTeX) when `<study>-confirm` holds
    confirmed points; `ok`: the sweep's successful rows. Returns their paths by name (none without a confirmation)."""
    confirmed = confirm.results(study, storage)
    if confirmed.empty:
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = metrics_of(confirmed)
    written: dict[str, Path] = {}
    if metrics:
        written["confirm"] = plot_confirmed(confirmed, sweep_relative(ok, baseline, metrics), metrics,
                                            out_dir / "confirm_front.png", study, n_caption(ok))
    numbers = [c for c in confirmed.columns if c == "speedup" or c.startswith(("speedup_", "delta_"))]
    written["confirm_csv"] = out_dir / "confirm.csv"
    confirmed[["trial", *numbers, "latency_interleaved_s", "baseline_latency_interleaved_s", "verdict",
               "reason"]].to_csv(written["confirm_csv"], index=False)
    printed = table(confirmed, metrics)
    written["confirm_md"] = out_dir / "confirm.md"
    written["confirm_md"].write_text(markdown_table(printed, caption(confirmed, study)))
    written["confirm_tex"] = out_dir / "confirm.tex"
    written["confirm_tex"].write_text(latex_table(printed, caption(confirmed, study), f"tab:{study}-confirm"))
    return written


def pareto_columns(study: str, storage: str, front: pd.DataFrame) -> pd.DataFrame:
    """The confirmation's columns for a Pareto-set table (rows in `front`'s order, blank where a point is not
    confirmed): speed-up and each paired difference with their intervals, and the verdict. Empty without one."""
    confirmed = confirm.results(study, storage)
    if confirmed.empty:
        return pd.DataFrame(index=front.index)
    by_trial = confirmed.set_index("trial")
    n = int(confirmed["n"].iloc[0])
    out = pd.DataFrame(index=front.index)
    found = [by_trial.loc[t] if t in by_trial.index else None for t in front["trial"]]
    out[f"confirmed speed-up (N={n})"] = [with_spread(r, "speedup", 3) if r is not None else "" for r in found]
    for m in metrics_of(confirmed):
        out[f"Δ {m} (N={n})"] = [_signed(r, f"delta_{m}") if r is not None else "" for r in found]
    out["verdict"] = [r["verdict"] if r is not None else "not confirmed" for r in found]
    return out


def confirm_data(study: str, storage: str) -> dict:
    """Every confirmed point as plain data (configuration, speed-up, paired differences, per-round times, verdict):
    the file a figure or a sentence quoting the confirmation names."""
    confirmed = confirm.results(study, storage)
    points = []
    for _, r in confirmed.iterrows():
        entry = r["protocols"]["confirm"]
        points.append({"trial": int(r["trial"]), "config": {k: r[k] for k in knob_columns(confirmed) if k != "seeds"},
                       "verdict": entry["verdict"], "reason": entry["reason"], "speedup": entry["speedup"],
                       "latency_interleaved_s": entry["latency_interleaved_s"],
                       "baseline_latency_interleaved_s": entry["baseline_latency_interleaved_s"],
                       "deltas": entry["deltas"], "ratios": entry["ratios"],
                       "per_round_s_per_image": entry["per_round_s_per_image"], "load": entry["load"],
                       "device": entry["device"], "provenance": r["provenance"]})
    first = confirmed["protocols"].iloc[0]["confirm"] if len(confirmed) else {}
    return {"study": study, "confirm_study": confirm.study_name(study), "seeds": first.get("seeds"),
            "settings": settings_of(confirmed) if len(confirmed) else None, "order": first.get("order"),
            "resamples": first.get("resamples"), "speedup_spread": (first.get("speedup") or {}).get("spread"),
            "delta_spread": first.get("delta_spread"), "points": points}
