"""Explore one model by hand: widgets generated from TrialConfig, a Generate button, the baseline beside it.

    from workbench.lab.explore import Explorer
    Explorer(model="reference", seeds="0-7").show()

`Session` is the logic (no widgets): it keeps built pipelines keyed by the fields that need a rebuild
(`workbench.config.build_key`), so a call-time knob (steps, CFG scale, CFG cutoff, scheduler, seeds) reuses the
pipeline and only swaps the scheduler through diffusers' `from_config`. `Explorer` is the ipywidgets front end.
Save runs the setting as a full trial (`record_trial`: warm-up, timed batches, every metric) into a study of the
results store, the same row a sweep writes.
"""
from __future__ import annotations

import hashlib
import html
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench import knobs, paths
from workbench.config import SPECS, TrialConfig, build_key
from workbench.errors import ConfigError
from workbench.images import contact_sheet, difference, png, save_images
from workbench.lab.widgets import control, value_of
from workbench.measure.quality import Quality
from workbench.metrics import METRICS, QUALITY, with_spread
from workbench.models import native_resolution, quality_is_meaningful, resolve_device
from workbench.prompts import load_prompts, prompts_for
from workbench.report.tables import spread_legend
from workbench.study.executors import record_trial
from workbench.study.store import Store
from workbench.study.studies import folder as study_folder
from workbench.trial import build_pipeline, generate

# What a baseline shares with the setting it is compared to: the model and how it is measured. Every other
# field (every knob, including ones added later) takes the baseline's value.
SHARED = ("model", "seeds", "prompt_set", "resolution", "device", "batch_size", "timing_repeats", "quality",
          "fid_reference", "clip_model")
KEEP_PIPELINES = 2  # the setting's and the baseline's


@dataclass
class Shot:
    """One press of Generate: the images, the baseline's at the same seeds, metrics and where the time went."""
    config: TrialConfig
    baseline_config: TrialConfig
    images: torch.Tensor                     # uint8 [N, 3, H, W]
    baseline: torch.Tensor
    metrics: dict = field(default_factory=dict)
    absent: dict = field(default_factory=dict)
    baseline_metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)   # build_s, generate_s, baseline_s, quality_s (+ display_s)
    rebuilt: bool = False
    baseline_dir: Path | None = None              # the baseline's images on disk (fidelity reads them)


class Session:
    """Generates a setting and its baseline at the same seeds, keeping built pipelines between calls."""

    def __init__(self, baseline: dict | None = None, results: str | Path | None = None):
        self.baseline_knobs = dict(baseline or {})
        TrialConfig.from_dict(self.baseline_knobs, where="baseline")  # one line naming the field if bad
        self.results = Path(results or paths.results())
        self.pipes: OrderedDict[tuple, object] = OrderedDict()
        self.builds = 0                          # how many pipelines this session built (tests, timings)
        self._baselines: dict[tuple, tuple[torch.Tensor, dict, dict, Path]] = {}

    def baseline_config(self, cfg: TrialConfig) -> TrialConfig:
        """The baseline of a setting: the baseline's knobs, the setting's model, seeds and measurement fields."""
        values = TrialConfig().to_dict()
        values.update(self.baseline_knobs)
        values.update({k: v for k, v in cfg.to_dict().items() if k in SHARED})
        return TrialConfig.from_dict(values, where="baseline")

    def pipeline(self, cfg: TrialConfig):
        """(pipeline, build seconds or 0.0 when kept) for the configuration's build key."""
        key = build_key(cfg)
        if key in self.pipes:
            self.pipes.move_to_end(key)
            return self.pipes[key], 0.0
        device = resolve_device(cfg.device)
        knobs.check_device(cfg, device)
        while len(self.pipes) >= KEEP_PIPELINES:
            self.pipes.popitem(last=False)
        t0 = time.perf_counter()
        pipe, _ = build_pipeline(cfg, device)
        self.pipes[key] = pipe
        self.builds += 1
        return pipe, time.perf_counter() - t0

    def images(self, cfg: TrialConfig) -> tuple[torch.Tensor, dict]:
        """All images of the configuration's seeds as uint8 [N, 3, H, W], and {build_s, generate_s}."""
        pipe, build_s = self.pipeline(cfg)
        device = resolve_device(cfg.device)
        seeds = cfg.seed_list
        prompts = prompts_for(load_prompts(cfg.prompt_set), len(seeds))
        resolution = cfg.resolution or native_resolution(pipe)
        t0 = time.perf_counter()
        out = [generate(pipe, cfg, prompts[i:i + cfg.batch_size], seeds[i:i + cfg.batch_size], resolution, device)
               for i in range(0, len(seeds), cfg.batch_size)]
        return torch.cat(out), {"build_s": build_s, "generate_s": time.perf_counter() - t0}

    def shoot(self, config: TrialConfig | dict, measure: bool = True) -> Shot:
        """Generate the setting and its baseline (kept per baseline and seeds); with `measure` and cfg.quality,
        their metrics too (else call `measure` later: the explorer shows the images first)."""
        cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
        base_cfg = self.baseline_config(cfg)
        images, timings = self.images(cfg)
        rebuilt = timings["build_s"] > 0
        base, base_metrics, _, folder, base_s = self._baseline(base_cfg)
        timings["baseline_s"] = base_s
        shot = Shot(cfg, base_cfg, images, base, baseline_metrics=base_metrics, timings=timings, rebuilt=rebuilt)
        shot.baseline_dir = folder
        if measure:
            self.measure(shot)
        return shot

    def measure(self, shot: Shot) -> Shot:
        """The shot's quality metrics with their spreads (fidelity against its baseline), if cfg.quality."""
        if shot.config.quality:
            t0 = time.perf_counter()
            shot.metrics, shot.absent = quality(shot.config, shot.images, shot.baseline_dir, self.results)
            shot.timings["quality_s"] = time.perf_counter() - t0
        return shot

    def _baseline(self, base_cfg: TrialConfig):
        """(images, metrics, absent, folder, seconds spent now) of the baseline; generated once per setting."""
        key = tuple(sorted(base_cfg.to_dict().items()))
        if key in self._baselines:
            return (*self._baselines[key], 0.0)
        t0 = time.perf_counter()
        images, _ = self.images(base_cfg)
        folder = self.results / "explore" / f"baseline-{_digest(key)}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        save_images(images, base_cfg.seed_list, folder)
        metrics, absent = quality(base_cfg, images, None, self.results) if base_cfg.quality else ({}, {})
        self._baselines[key] = (images, metrics, absent, folder)
        return images, metrics, absent, folder, time.perf_counter() - t0

    def save(self, cfg: TrialConfig, storage: str, study: str = "interactive") -> int:
        """Run the setting as a full trial into `study` (its baseline first, if the study has none for these
        seeds); returns the trial number. The row is the one a sweep writes, plus provenance.explore."""
        store = Store(storage)
        base_cfg = self.baseline_config(cfg)
        rows = store.rows(study)
        base_row = next((r for r in rows if r["status"] == "ok" and r["config"] == base_cfg.to_dict()
                         and r["provenance"].get("explore", {}).get("role") == "baseline"), None)
        number = max((r["trial_number"] for r in rows), default=-1) + 1
        if base_row is None:
            base_row = self._record(store, study, number, base_cfg, None, "baseline")
            number += 1
        if cfg == base_cfg:
            return base_row["trial_number"]
        self._record(store, study, number, cfg, base_row["artifacts"]["images"], "setting",
                     baseline_trial=base_row["trial_number"])
        return number

    @staticmethod
    def _record(store, study: str, number: int, cfg: TrialConfig, baseline_dir, role: str, **extra) -> dict:
        """record_trial (a sweep trial's code path), then the row again with provenance.explore added."""
        folder = paths.artifacts(study_folder(study, store.url), number)
        row = record_trial(cfg.to_dict(), store.url, study, number, baseline_dir, str(folder), progress=False)
        row["provenance"]["explore"] = {"role": role, **extra}
        row["trial_number"] = number
        store.write(study, number, row)
        return row


def quality(cfg: TrialConfig, images: torch.Tensor, baseline_dir, results: Path) -> tuple[dict, dict]:
    """Every quality metric of these images with its spread (the trial's own `Quality`), and why any is absent."""
    seeds = cfg.seed_list
    prompts = prompts_for(load_prompts(cfg.prompt_set), len(seeds))
    q = Quality(cfg, resolve_device(cfg.device), baseline_dir, results / "fid-reference",
                meaningful=quality_is_meaningful(cfg.model))
    for i in range(0, len(seeds), cfg.batch_size):
        q.update(images[i:i + cfg.batch_size], prompts[i:i + cfg.batch_size], seeds[i:i + cfg.batch_size])
    metrics, _, absent = q.finish()
    return metrics, absent


def _digest(key) -> str:
    return hashlib.sha1(repr(key).encode()).hexdigest()[:12]


def metrics_table(shot: Shot) -> str:
    """An HTML table: each quality metric of the setting and of the baseline, with its spread."""
    rows = []
    for name in QUALITY:
        mine = with_spread(shot.metrics, name) or f"<i>absent: {shot.absent.get(name, 'not measured')}</i>"
        theirs = with_spread(shot.baseline_metrics, name) or "—"
        arrow = "↓" if METRICS[name].better == "minimize" else "↑"
        rows.append(f"<tr><td>{METRICS[name].label} {arrow}</td><td>{mine}</td><td>{theirs}</td></tr>")
    return ("<table class='wb-metrics'><tr><th>metric</th><th>this setting</th><th>baseline</th></tr>"
            + "".join(rows) + f"</table><small>N = {len(shot.images)} images, the same seeds and prompts for "
            f"both. Spreads: {spread_legend(list(QUALITY))}.</small>")


def timing_line(shot: Shot) -> str:
    """Where the time of one Generate went, as the user reads it."""
    t = shot.timings
    build = f"build/load {t['build_s']:.2f} s" if shot.rebuilt else "pipeline kept (no reload)"
    base = f"baseline {t['baseline_s']:.2f} s" if t.get("baseline_s") else "baseline cached"
    parts = [build, f"generate {t['generate_s']:.2f} s ({len(shot.images)} images)", base]
    if "display_s" in t:
        parts.append(f"display {t['display_s']:.2f} s")
    parts.append(f"quality {t['quality_s']:.2f} s" if "quality_s" in t
                 else "quality: measuring…" if shot.config.quality else "quality off")
    return " · ".join(parts)


class Explorer:
    """The explore notebook's widgets: one control per TrialConfig field, Generate, Save, images and metrics."""

    def __init__(self, baseline: dict | None = None, storage: str | None = None, study: str = "interactive",
                 scale: int = 0, **values):
        import ipywidgets as w

        start = TrialConfig.from_dict(values, where="explore")  # one line naming the field if a parameter is bad
        self.session = Session(baseline)
        self.storage, self.study, self.scale = storage or paths.lab_storage(), study, scale
        self.specs = SPECS
        self.controls = {name: control(spec, getattr(start, name)) for name, spec in self.specs.items()}
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play",
                                        tooltip="generate this setting and its baseline at the same seeds")
        self.save_button = w.Button(description=f"Save to study '{study}'", icon="save", disabled=True,
                                    tooltip="run the setting as a full trial (timed, every metric) into the store",
                                    layout=w.Layout(width="auto"))
        self.status = w.HTML()
        self.timing = w.HTML()
        self.image = w.Image(format="png")
        self.baseline_image = w.Image(format="png")
        self.diff_image = w.Image(format="png")
        self.metrics = w.HTML()
        self.shot: Shot | None = None
        self.generate_button.on_click(lambda _: self.generate())
        self.save_button.on_click(lambda _: self.save())

    def config(self) -> TrialConfig:
        """The configuration the controls show (one ConfigError naming the field if it is not valid)."""
        return TrialConfig.from_dict({name: value_of(self.specs[name], c) for name, c in self.controls.items()},
                                     where="explore")

    def generate(self) -> Shot | None:
        """What Generate does: validate, generate (pipeline kept when only call-time knobs changed), show the
        images at once, then measure quality and show the metrics."""
        self.generate_button.disabled = True
        self.status.value = "<b>generating…</b>"
        try:
            shot = self.session.shoot(self.config(), measure=False)
            t0 = time.perf_counter()
            self._show(shot)
            shot.timings["display_s"] = time.perf_counter() - t0
            self.timing.value = timing_line(shot)
            if shot.config.quality:
                self.metrics.value = "<i>measuring quality…</i>"
                self.session.measure(shot)
                self.metrics.value = metrics_table(shot)
            else:
                self.metrics.value = "<i>quality off</i>"
        except ConfigError as e:
            self.status.value = f"<span style='color:#b00'>error: {_escape(str(e))}</span>"
            return None
        except Exception as e:  # noqa: BLE001 - a widget callback's traceback goes to the log, not the page
            traceback.print_exc()
            reason = (str(e).strip().splitlines() or [""])[0][:300]
            self.status.value = f"<span style='color:#b00'>failed: {type(e).__name__}: {_escape(reason)}</span>"
            return None
        finally:
            self.generate_button.disabled = False
        self.shot = shot
        self.timing.value = timing_line(shot)
        self.status.value = ("<span style='color:#070'>ready</span>: the baseline is "
                             + _escape(_difference_text(shot.config, shot.baseline_config)))
        self.save_button.disabled = False
        return shot

    def _show(self, shot: Shot) -> None:
        """The setting's, the baseline's and the difference's contact sheets."""
        cols = 4 if len(shot.images) <= 16 else 8
        width = min(cols, len(shot.images)) * shot.images.shape[-1]
        scale = self.scale or max(1, 440 // width)  # three sheets side by side on a laptop screen
        self.image.value = png(contact_sheet(shot.images, cols), scale)
        self.baseline_image.value = png(contact_sheet(shot.baseline, cols), scale)
        self.diff_image.value = png(contact_sheet(difference(shot.images, shot.baseline), cols), scale)

    def save(self) -> int | None:
        """What Save does: the shown setting as a full trial row of the study (baseline first if needed)."""
        if self.shot is None:
            return None
        self.save_button.disabled = True
        self.status.value = "<b>saving: a full trial (warm-up, timed batches, every metric)…</b>"
        try:
            number = self.session.save(self.shot.config, self.storage, self.study)
        except Exception as e:  # noqa: BLE001 - the failed row is in the store; the user reads why here
            self.status.value = f"<span style='color:#b00'>save failed: {_escape(str(e).splitlines()[0])}</span>"
            return None
        finally:
            self.save_button.disabled = False
        self.status.value = f"saved as trial {number} of study '{self.study}' in {_escape(self.storage)}"
        return number

    def widget(self):
        """The whole explorer as one widget: controls (call-time | rebuild), buttons, timings, images, metrics."""
        import ipywidgets as w

        call = [c for n, c in self.controls.items() if self.specs[n].call_time]
        rebuild = [c for n, c in self.controls.items() if not self.specs[n].call_time]
        left = w.VBox([w.HTML("<b>call-time knobs</b> (the pipeline is kept)"), *call])
        right = w.VBox([w.HTML("<b>build knobs</b> (a change rebuilds the pipeline)"), *rebuild])

        def titled(title, image):
            image.layout = w.Layout(max_width="100%", height="auto")
            return w.VBox([w.HTML(f"<b>{title}</b>"), image], layout=w.Layout(width="33%"))

        images = w.HBox([titled("this setting", self.image), titled("baseline, same seeds", self.baseline_image),
                         titled("difference ×4", self.diff_image)])
        return w.VBox([w.HBox([left, right]), w.HBox([self.generate_button, self.save_button]), self.status,
                       self.timing, images, self.metrics], layout=w.Layout(width="100%"))

    def show(self):
        """Display the explorer in the notebook (and return self)."""
        from IPython.display import display

        display(self.widget())
        return self


def _difference_text(cfg: TrialConfig, base: TrialConfig) -> str:
    a, b = cfg.to_dict(), base.to_dict()
    changed = [f"{k}={b[k]}" for k in a if a[k] != b[k]]
    return ", ".join(changed) if changed else "this very setting"


def _escape(text: str) -> str:
    return html.escape(text)

