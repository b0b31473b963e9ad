"""Is the sweep metric sound? Each quality metric at sweep sizes (N = 16, 64, 256) against FID at N = 2,000.

For every configuration (DDIM and DPM++ 2M at 4-50 steps, CFG 1 / 3 / 7.5) it generates N_truth images
(seeds 0..N_truth-1) for the ground truth, FID@N_truth, and 5 disjoint seed sets (seeds 10000 + 256 s + i) for
the small-N metrics, measured exactly as a trial measures them (workbench.measure.quality.Quality: same
reference set of N images, same prompts, same protocols). The analysis ranks the configurations by each metric
within each seed set and reports Spearman's rho against the FID@N_truth ranking, mean and sd over the sets.

    python -m benchmarks.metric_soundness generate --out results/soundness --device cuda   # ~4 min on an H100
    python -m benchmarks.metric_soundness analyze results/soundness                        # seconds, any CPU
    python -m benchmarks.metric_soundness generate --out /tmp/s --quick                    # a CPU smoke run
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

CONFIGS = ([("ddim", s, 7.5) for s in (4, 8, 15, 25, 50)] + [("dpm++2m", s, 7.5) for s in (4, 8, 15, 25, 50)]
           + [("dpm++2m", 25, 1.0), ("dpm++2m", 25, 3.0)])
NS = (16, 64, 256)
SETS = 5
TRUTH_N = 2000
SET_BASE = 10000
SET_STRIDE = 256  # seed set s is SET_BASE + 256 s + i: the same sets whatever N a run measures
METRICS = {"fid": 1, "kid": 1, "cmmd": 1, "clip_score": -1, "align_mean": -1}  # +1: lower is better
COLUMNS = ("scheduler", "steps", "cfg_scale", "seed_set", "n", "metric", "value", "spread")


def _images(pipe, cfg, prompts, seeds, resolution, device, batch):
    from workbench.trial import generate

    for i in range(0, len(seeds), batch):
        yield generate(pipe, cfg, prompts[i:i + batch], seeds[i:i + batch], resolution, device)


def _measure(cfg, batches, device, cache, fid_interval=True) -> tuple[dict, dict]:
    from workbench.measure.quality import Quality
    from workbench.models import quality_is_meaningful

    q = Quality(cfg, device, None, cache, fid_interval=fid_interval, meaningful=quality_is_meaningful(cfg.model))
    for images, prompts, seeds in batches:
        q.update(images, prompts, seeds)
    metrics, protocols, _ = q.finish()
    return metrics, protocols


def _spread(metrics: dict, name: str) -> float | None:
    from workbench.metrics import SPREADS

    spec = SPREADS.get(name)
    if spec is None or not all(c in metrics for c in spec[1:]):
        return None
    return metrics[spec[1]] if spec[0] == "plusminus" else (metrics[spec[2]] - metrics[spec[1]]) / 2


def generate(out: Path, device: str, truth_n: int, sets: int, ns: tuple[int, ...], configs, batch: int,
             cache: Path | None = None, truth: bool = True, name: str = "values") -> None:
    if max(ns) > SET_STRIDE:
        raise SystemExit(f"--ns: at most {SET_STRIDE} images a seed set, got {max(ns)}")
    from tqdm.auto import tqdm

    from workbench.config import TrialConfig
    from workbench.models import native_resolution, resolve_device
    from workbench.prompts import load_prompts, prompts_for
    from workbench.trial import build_pipeline

    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    cache = cache or out / "reference-cache"
    prompt_list = load_prompts("world-v1")
    rows, times, protocols = [], {}, {}
    small_protocols: dict = {}
    for scheduler, steps, cfg_scale in tqdm(configs, desc="configurations"):
        t0 = time.time()
        cfg = TrialConfig(scheduler=scheduler, steps=steps, cfg_scale=cfg_scale, device=device, batch_size=batch,
                          seeds=f"0-{truth_n - 1}")
        pipe, _ = build_pipeline(cfg, dev)
        resolution = native_resolution(pipe)
        key = {"scheduler": scheduler, "steps": steps, "cfg_scale": cfg_scale}

        def record(seed_set, n, metrics):
            for name in METRICS:
                if name in metrics:
                    rows.append({**key, "seed_set": seed_set, "n": n, "metric": name, "value": metrics[name],
                                 "spread": _spread(metrics, name)})

        if truth:
            seeds = list(range(truth_n))
            prompts = prompts_for(prompt_list, truth_n)
            batches = ((img, prompts[i:i + batch], seeds[i:i + batch]) for i, img in
                       zip(range(0, truth_n, batch), _images(pipe, cfg, prompts, seeds, resolution, dev, batch)))
            metrics, protocols = _measure(cfg, batches, dev, cache, fid_interval=False)
            record(-1, truth_n, metrics)
        for s in range(sets):
            seeds = [SET_BASE + s * SET_STRIDE + i for i in range(max(ns))]
            prompts = prompts_for(prompt_list, max(ns))
            images = torch.cat(list(_images(pipe, cfg, prompts, seeds, resolution, dev, batch)))
            for n in ns:
                metrics, small_protocols = _measure(cfg, [(images[:n], prompts[:n], seeds[:n])], dev, cache)
                record(s, n, metrics)
        times[f"{scheduler}/{steps}/{cfg_scale}"] = time.time() - t0
        del pipe
        _write(out, name, rows, {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
                           "torch": torch.__version__, "truth_n": truth_n, "sets": sets, "ns": list(ns),
                           "set_seeds": f"{SET_BASE} + {SET_STRIDE} * set + i", "seconds_per_configuration": times,
                           "protocols_truth": protocols, "protocols_small_n": small_protocols})
    print(f"wrote {len(rows)} values to {out / name}.csv in {sum(times.values()):.0f} s")


def _write(out: Path, name: str, rows: list[dict], meta: dict) -> None:
    """Rewrite the values after every configuration, so a run cut short keeps what it measured."""
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / f"{name}.meta.json").write_text(json.dumps(meta, indent=1, default=str))


def spearman_table(values: list[dict]) -> dict[str, dict[int, tuple[float, float, list[float]]]]:
    """metric -> n -> (mean rho, sd rho, per-set rhos) against the truth FID ranking (sign: higher is better)."""
    from scipy.stats import spearmanr

    def conf(r):
        return (r["scheduler"], int(r["steps"]), float(r["cfg_scale"]))

    truth = {conf(r): float(r["value"]) for r in values if r["metric"] == "fid" and int(r["seed_set"]) == -1}
    configs = sorted(truth)
    table: dict[str, dict[int, tuple]] = {}
    for metric, sign in METRICS.items():
        for n in sorted({int(r["n"]) for r in values}):
            sets = sorted({int(r["seed_set"]) for r in values if int(r["n"]) == n})
            rhos = []
            for s in sets:
                got = {conf(r): float(r["value"]) for r in values
                       if r["metric"] == metric and int(r["n"]) == n and int(r["seed_set"]) == s}
                if set(got) != set(configs):
                    continue
                rho = spearmanr([sign * got[c] for c in configs], [truth[c] for c in configs]).statistic
                rhos.append(float(rho))
            if rhos:
                table.setdefault(metric, {})[n] = (float(np.mean(rhos)), float(np.std(rhos, ddof=1))
                                                      if len(rhos) > 1 else 0.0, rhos)
    return table


def analyze(folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = []
    for path in sorted(folder.glob("*.csv")):  # every generate run in the folder (e.g. extra N without truth)
        with open(path) as f:
            values += list(csv.DictReader(f))
    metas = sorted(folder.glob("*.meta.json"))
    meta = json.loads(metas[0].read_text()) if metas else {}
    table = spearman_table(values)
    truth_n = max(int(r["n"]) for r in values if int(r["seed_set"]) == -1)
    ns = sorted({int(r["n"]) for r in values if int(r["seed_set"]) >= 0})
    n_configs = len({(r["scheduler"], r["steps"], r["cfg_scale"]) for r in values})
    n_sets = len({r["seed_set"] for r in values if int(r["seed_set"]) >= 0})
    head = (f"Spearman rho of each metric's ranking of {n_configs} configurations against FID@{truth_n:,} "
            f"(mean ± sd over {n_sets} disjoint seed sets; higher-is-better metrics negated)")
    lines = [head, "", "| metric | " + " | ".join(f"N={n}" for n in ns) + f" | N={truth_n:,} (one set) |",
             "|---|" + "---|" * (len(ns) + 1)]
    for metric, by_n in table.items():
        cells = [f"{by_n[n][0]:.3f} ± {by_n[n][1]:.3f}" if n in by_n else "" for n in ns]
        cells.append(f"{by_n[truth_n][0]:.3f}" if truth_n in by_n else "")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    truth = sorted(((float(r["value"]), r["scheduler"], r["steps"], r["cfg_scale"]) for r in values
                    if r["metric"] == "fid" and int(r["seed_set"]) == -1))
    lines += ["", f"Ground truth, FID@{truth_n:,}: " + ", ".join(f"{s} {st} st cfg {c}: {v:.1f}"
                                                               for v, s, st, c in truth)]
    truth_all = {(r["scheduler"], int(r["steps"]), float(r["cfg_scale"])): float(r["value"]) for r in values
                 if r["metric"] == "fid" and int(r["seed_set"]) == -1}
    front = {c: truth_all[c] for c in near_front(truth_all)}
    lines += ["", decision_table(values, front, "seed_set", (
        f"Near the front: the {len(front)} configurations with FID@{truth_n:,} within {NEAR_FRONT - 1:.0%} of the best "
        f"({min(front.values()):.1f}-{max(front.values()):.1f}), the same {n_sets} seed sets (disjoint from each other; "
        "the N of one set are nested prefixes of its images). rho: Spearman against FID@2,000, mean ± sd over sets; "
        "decision accuracy: share of (set, pair) decisions ordering the pair as FID@2,000 does, by the pair's true gap "
        "in FID@2,000 points (decisions counted)."), metrics=tuple(METRICS))]
    text = "\n".join(lines)
    print(text)
    (folder / "rho_table.md").write_text(text + "\n")
    fig, ax = plt.subplots(figsize=(3.4, 2.6), dpi=200)
    for metric, by_n in table.items():
        xs = [n for n in ns if n in by_n]
        ax.errorbar(xs, [by_n[n][0] for n in xs], yerr=[by_n[n][1] for n in xs], marker="o", ms=3, capsize=2,
                    lw=1, label=metric)
    ax.axhline(0.9, color="0.5", lw=0.7, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("images per trial N")
    ax.set_ylabel(f"Spearman ρ vs FID@{truth_n:,}")
    ax.set_title(f"{n_configs} configurations, {n_sets} seed sets ({meta.get('device', '?')})", fontsize=6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(folder / f"rho_vs_n.{ext}")
    print(f"figure: {folder / 'rho_vs_n.png'}; table: {folder / 'rho_table.md'}")


NEAR_FRONT = 1.2       # a configuration is near the front when its FID@2,000 is within 20 % of the best
DISJOINT_NS = (32, 64, 128, 256, 500)
DISJOINT_BASE = 20000  # pool seeds 20000 + i: disjoint from the truth (0-1999) and the 5 sets (10000-11279)
CHUNK = 100            # images per configuration per round: every configuration always holds the same seeds


def near_front(truth: dict) -> list:
    """Configurations whose FID@2,000 is within NEAR_FRONT x the best: the ones a sweep's front is made of."""
    best = min(truth.values())
    return sorted(c for c, v in truth.items() if v <= NEAR_FRONT * best)


def _truth(folder: Path) -> dict:
    with open(folder / "values.csv") as f:
        return {(r["scheduler"], int(r["steps"]), float(r["cfg_scale"])): float(r["value"])
                for r in csv.DictReader(f) if r["metric"] == "fid" and int(r["seed_set"]) == -1}


def _chunk_file(out: Path, conf, start: int, kind: str = "features") -> Path:
    return out / kind / f"{conf[0]}-{conf[1]}-{conf[2]:g}-{start:05d}.npy"


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def disjoint_generate(out: Path, truth_folder: Path, device: str, pool: int, batch: int,
                      images_only: bool = False) -> None:
    """Inception features of `pool` images per near-front configuration (seeds DISJOINT_BASE + i, prompt i mod P),
    generated round-robin in chunks of CHUNK so that a run cut short leaves every configuration at the same seeds;
    chunks already on disk are kept. Analysed by `disjoint_analyze` into disjoint subsets of N images.

    `images_only` keeps the uint8 images (OUT/images/) and computes no feature: for a GPU host without the FID
    Inception weights. A later run without it, anywhere, turns those image chunks into features instead of
    generating them again."""
    from workbench.config import TrialConfig
    from workbench.models import native_resolution, resolve_device
    from workbench.prompts import load_prompts, prompts_for
    from workbench.trial import build_pipeline

    configs = near_front(_truth(truth_folder))
    dev = resolve_device(device)
    prompt_list = load_prompts("world-v1")
    pipes: dict = {}
    for start in range(0, pool, CHUNK):
        for conf in configs:
            path = _chunk_file(out, conf, start, "images" if images_only else "features")
            if path.is_file():
                continue
            t0 = time.time()
            stored = _chunk_file(out, conf, start, "images")
            if stored.is_file():  # generated earlier (e.g. on a GPU host with --images-only)
                images = torch.from_numpy(np.load(stored))
            else:
                cfg = TrialConfig(scheduler=conf[0], steps=conf[1], cfg_scale=conf[2], device=device,
                                  batch_size=batch)
                if conf not in pipes:
                    pipes.clear()  # one pipeline at a time: building one costs a second, memory is what matters
                    pipes[conf] = build_pipeline(cfg, dev)[0]
                pipe = pipes[conf]
                seeds = [DISJOINT_BASE + i for i in range(start, start + CHUNK)]
                prompts = prompts_for(prompt_list, range(start, start + CHUNK))
                images = torch.cat(list(_images(pipe, cfg, prompts, seeds, native_resolution(pipe), dev, batch)))
            if images_only:
                _save(path, images.cpu().numpy().astype(np.uint8))
            else:
                from workbench.measure.fid import features

                _save(path, features(images, dev).numpy().astype(np.float32))
            print(f"{path.name}{' (from stored images)' if stored.is_file() and not images_only else ''}: "
                  f"{time.time() - t0:.1f} s", flush=True)


def _pool(out: Path, configs) -> tuple[dict, int]:
    """Features per configuration, over the chunks every configuration has (the same seeds for all)."""
    starts = None
    for conf in configs:
        have = {int(p.stem.rsplit("-", 1)[1]) for p in (out / "features").glob(f"{conf[0]}-{conf[1]}-{conf[2]:g}-*.npy")}
        starts = have if starts is None else starts & have
    count = 0
    while count in (starts or set()):
        count += CHUNK
    return {c: np.concatenate([np.load(_chunk_file(out, c, s)) for s in range(0, count, CHUNK)]) for c in configs}, count


def decision_accuracy(values: dict, truth: dict, bins) -> dict:
    """Pairwise decisions: for every subset and every pair of configurations, does the metric order them as
    FID@2,000 does? Returns {(lo, hi): (correct, total)} by the pair's true FID@2,000 gap in [lo, hi)."""
    out = {b: [0, 0] for b in bins}
    configs = sorted(truth)
    for subset in values.values():
        for i, a in enumerate(configs):
            for b in configs[i + 1:]:
                gap = abs(truth[a] - truth[b])
                right = (subset[a] - subset[b]) * (truth[a] - truth[b]) > 0
                for lo, hi in bins:
                    if lo <= gap < hi:
                        out[(lo, hi)][0] += int(right)
                        out[(lo, hi)][1] += 1
    return {b: tuple(v) for b, v in out.items()}


GAP_BINS = ((0.0, 1.0), (1.0, 3.0), (3.0, 6.0), (6.0, float("inf")))


def disjoint_analyze(out: Path, truth_folder: Path, ns, data: Path, device: str = "cpu") -> None:
    """FID and KID of every near-front configuration on disjoint subsets of N pool images (each against the first N
    reference images, as a trial of N images measures); Spearman rho against FID@2,000 per subset, and pairwise
    decision accuracy by true gap. Writes the per-subset values (DATA.csv) and the table (DATA.md)."""

    from workbench.measure import fid as fid_mod, kid as kid_mod
    from workbench.measure.quality import WORLD_REFERENCE
    from workbench.models import resolve_device
    from workbench.world.render import reference_images

    truth_all = _truth(truth_folder)
    configs = near_front(truth_all)
    truth = {c: truth_all[c] for c in configs}
    feats, pool = _pool(out, configs)
    dev = resolve_device(device)
    rows = []
    for n in ns:
        if pool // n < 1:
            continue
        real = fid_mod.reference_features(WORLD_REFERENCE, n, lambda: reference_images(n), out / "reference-cache",
                                          dev).double()
        for k in range(pool // n):
            for conf in configs:
                fake = torch.from_numpy(feats[conf][k * n:(k + 1) * n]).double()
                kid_value, _ = kid_mod.kid(fake, real, size=kid_mod.subset_size(n, n))
                for metric, value in (("fid", fid_mod.fid(fake, real)), ("kid", kid_value)):
                    rows.append({"scheduler": conf[0], "steps": conf[1], "cfg_scale": conf[2], "n": n, "subset": k,
                                 "metric": metric, "value": value})
    data.parent.mkdir(parents=True, exist_ok=True)
    with open(data.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, ("scheduler", "steps", "cfg_scale", "n", "subset", "metric", "value"))
        writer.writeheader()
        writer.writerows(rows)
    text = disjoint_table(rows, truth, pool)
    data.with_suffix(".md").write_text(text + "\n")
    print(text)


def disjoint_table(rows: list[dict], truth: dict, pool: int) -> str:
    """The markdown table of `disjoint_analyze` from its per-subset rows (re-derivable from the CSV alone)."""
    configs = sorted(truth)
    head = (f"Near-front configurations ({len(configs)} with FID@2,000 within {NEAR_FRONT - 1:.0%} of the best: "
            f"{min(truth.values()):.1f}-{max(truth.values()):.1f}), {pool} pool images each (seeds "
            f"{DISJOINT_BASE}-{DISJOINT_BASE + pool - 1}, prompt i mod 200), cut into disjoint subsets of N; every "
            "subset against the first N reference images, as a trial of N images. rho: Spearman against FID@2,000, "
            "mean ± sd over subsets. Decision accuracy: share of (subset, pair) decisions that order the pair as "
            "FID@2,000 does, by the pair's true gap in FID@2,000 points (decisions counted).")
    return decision_table(rows, truth, "subset", head)


def decision_table(rows: list[dict], truth: dict, subset_key: str, head: str, metrics=("fid", "kid")) -> str:
    """Per metric and N: rho against FID@2,000 (mean ± sd over subsets) and pairwise decision accuracy by true gap,
    over the configurations in `truth`; `rows` hold one value per (configuration, N, subset, metric)."""
    from scipy.stats import spearmanr

    def conf(r):
        return (r["scheduler"], int(r["steps"]), float(r["cfg_scale"]))

    configs = sorted(truth)
    ns = sorted({int(r["n"]) for r in rows if int(r[subset_key]) >= 0})
    lines = [head, "",
             "| metric | N | subsets | rho mean ± sd | " + " | ".join(
                 f"gap {lo:g}-{hi:g}" if hi != float("inf") else f"gap >= {lo:g}" for lo, hi in GAP_BINS)
             + " | all pairs: mean ± sd over subsets |", "|---|---|---|---|" + "---|" * (len(GAP_BINS) + 1)]
    for metric in metrics:
        sign = METRICS[metric]
        for n in ns:
            subsets: dict = {}
            for r in rows:
                if r["metric"] == metric and int(r["n"]) == n and int(r[subset_key]) >= 0 and conf(r) in truth:
                    subsets.setdefault(int(r[subset_key]), {})[conf(r)] = sign * float(r["value"])
            subsets = {k: v for k, v in subsets.items() if set(v) == set(configs)}
            rhos = [float(spearmanr([v[c] for c in configs], [truth[c] for c in configs]).statistic)
                    for v in subsets.values()]
            acc = decision_accuracy(subsets, truth, GAP_BINS)
            cells = [f"{c / t:.2f} ({t})" if t else "-" for c, t in acc.values()]
            each = [sum(a[0] for a in decision_accuracy({k: v}, truth, GAP_BINS).values()) / max(1, sum(
                a[1] for a in decision_accuracy({k: v}, truth, GAP_BINS).values())) for k, v in subsets.items()]
            spread = f" ± {np.std(each, ddof=1):.2f}" if len(each) > 1 else ""
            cells.append(f"{np.mean(each):.2f}{spread}" if each else "-")
            sd = f"{np.std(rhos, ddof=1):.2f}" if len(rhos) > 1 else "- (one subset)"
            lines.append(f"| {metric} | {n} | {len(subsets)} | {np.mean(rhos):.2f} ± {sd} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--device", default="auto")
    g.add_argument("--batch", type=int, default=256)
    g.add_argument("--cache", type=Path, help="folder for reference features (default: OUT/reference-cache)")
    g.add_argument("--ns", default=",".join(map(str, NS)), help="image counts of the seed sets")
    g.add_argument("--no-truth", action="store_true", help="skip FID@2,000 (already measured in this folder)")
    g.add_argument("--name", default="values", help="file name of this run's values (NAME.csv)")
    g.add_argument("--quick", action="store_true", help="3 configurations, 2 sets, N 8/16, truth 64: a smoke run")
    a = sub.add_parser("analyze")
    a.add_argument("folder", type=Path)
    d = sub.add_parser("disjoint", help="near-front configurations on disjoint image sets: generate, then analyze")
    d.add_argument("step", choices=("generate", "analyze"))
    d.add_argument("--out", type=Path, default=Path("results/soundness-disjoint"), help="features (not committed)")
    d.add_argument("--truth", type=Path, default=Path("docs/soundness"), help="folder of values.csv (FID@2,000)")
    d.add_argument("--pool", type=int, default=1000, help="images per configuration")
    d.add_argument("--ns", default=",".join(map(str, DISJOINT_NS)))
    d.add_argument("--data", type=Path, default=Path("docs/soundness/disjoint/near-front"), help="DATA.csv and DATA.md (outside docs/soundness itself, whose *.csv analyze reads)")
    d.add_argument("--device", default="auto")
    d.add_argument("--batch", type=int, default=50)
    d.add_argument("--images-only", action="store_true",
                   help="generate: keep uint8 images (OUT/images/), no features (a host without the FID weights); "
                        "a later generate without it turns them into features")
    args = p.parse_args()
    if args.command == "disjoint":
        if args.step == "generate":
            disjoint_generate(args.out, args.truth, args.device, args.pool, args.batch, args.images_only)
        else:
            disjoint_analyze(args.out, args.truth, [int(n) for n in args.ns.split(",")], args.data, args.device)
        return
    if args.command == "generate":
        if args.quick:
            generate(args.out, args.device, 64, 2, (8, 16), [CONFIGS[0], CONFIGS[3], CONFIGS[10]], args.batch,
                     args.cache)
        else:
            generate(args.out, args.device, TRUTH_N, SETS, tuple(int(n) for n in args.ns.split(",")), CONFIGS,
                     args.batch, args.cache, truth=not args.no_truth, name=args.name)
    else:
        analyze(args.folder)


if __name__ == "__main__":
    main()
