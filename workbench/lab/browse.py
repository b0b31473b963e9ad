"""Browse a study of the results store: an interactive Pareto scatter whose points show their configuration on
hover; clicking one shows that trial's images beside the baseline's.

    from workbench.lab.browse import StudyBrowser
    StudyBrowser().show()        # the store in the results folder, or StudyBrowser("postgresql://...")

The scatter is a plotly `FigureWidget`: since plotly 6 it is an anywidget whose JavaScript ships inside the
plotly wheel (`plotly/package_data/widgetbundle.js`) and reaches the page through the kernel, so it works in
JupyterLab 4 offline, with no lab extension to build; clicks come back to Python through `on_click`.
"""
from __future__ import annotations

import io

import pandas as pd
from PIL import Image

from workbench import paths
from workbench.errors import ConfigError
from workbench.metrics import METRICS, QUALITY, axis_label, with_spread
from workbench.report.front import losses, pareto_mask
from workbench.report.tables import knob_columns
from workbench.study.store import Store
from workbench.study.studies import baseline_number, objectives as study_objectives


def default_axes(study: str, storage: str, frame: pd.DataFrame) -> tuple[str, str]:
    """The study's first two objectives, else latency against the first quality metric the rows hold."""
    try:
        objectives = [m for m in study_objectives(study, storage) if m in frame]
    except ConfigError:  # no Optuna study (e.g. the explorer's interactive study)
        objectives = []
    if len(objectives) >= 2:
        return objectives[0], objectives[1]
    x = objectives[0] if objectives else "latency_s"
    y = next((m for m in QUALITY + ("gflops_per_image",) if m in frame and m != x), x)
    return x, y


def hover_text(row: pd.Series, knobs: list[str], x: str, y: str) -> str:
    """A point's hover label: trial number, its configuration, then the plotted metrics with their spreads."""
    lines = [f"<b>trial {int(row['trial'])}</b>"] + [f"{k} = {_fmt(row[k])}" for k in knobs if k in row]
    lines += [f"{METRICS[m].label}: {with_spread(row, m)}" for m in dict.fromkeys((x, y)) if m in METRICS]
    return "<br>".join(lines)


class StudyBrowser:
    """Study picker, x/y metric pickers, the Pareto scatter, and the selected trial's images beside the baseline's."""

    def __init__(self, storage: str | None = None, study: str | None = None, x: str | None = None,
                 y: str | None = None):
        import ipywidgets as w  # optional: the lab extra
        import plotly.graph_objects as go

        storage = storage or paths.lab_storage()
        self.storage = storage
        self.store = Store(storage)
        studies = self.store.studies()
        if study is not None and study not in studies:
            raise ConfigError(f"study: no rows for {study!r} in {storage}; known: {', '.join(studies) or 'none'}")
        self.study_picker = w.Dropdown(options=studies, value=study or (studies[0] if studies else None),
                                       description="study")
        self.x_picker = w.Dropdown(description="x")
        self.y_picker = w.Dropdown(description="y")
        self.trial_picker = w.Dropdown(description="trial", tooltip="or click a point")
        self.refresh_button = w.Button(description="Refresh", icon="refresh", tooltip="read the store again",
                                       layout=w.Layout(width="auto"))
        self.refresh_button.on_click(lambda _: self.refresh())
        self.figure = go.FigureWidget(layout={"height": 420, "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
                                              "hovermode": "closest", "template": "simple_white"})
        self.info = w.HTML()
        self.image = w.Image(format="png")
        self.baseline_image = w.Image(format="png")
        self.frame = pd.DataFrame()
        self.baseline: int | None = None
        self.selected: int | None = None
        self._x, self._y = x, y
        self._loading = False
        self.study_picker.observe(lambda _: self.load(), names="value")
        self.x_picker.observe(lambda _: self.plot(), names="value")
        self.y_picker.observe(lambda _: self.plot(), names="value")
        self.trial_picker.observe(lambda c: c["new"] is not None and self.select(c["new"]), names="value")
        if self.study_picker.value:
            self.load()
        else:
            self.info.value = f"<i>no study in {storage} yet: run a sweep or save a setting from the explorer</i>"

    def refresh(self) -> None:
        """Read the store again: new studies and new rows (e.g. after Save in the explorer)."""
        studies = self.store.studies()
        current = self.study_picker.value
        self.study_picker.options = studies
        if current in studies:
            self.study_picker.value = current
            self.load()
        elif studies:
            self.study_picker.value = studies[0]  # its observer loads it
        if studies:
            self.info.value = ""

    def load(self) -> None:
        """Read the chosen study's successful rows and draw them."""
        study = self.study_picker.value
        frame = self.store.frame(study)
        self.frame = frame[frame["status"] == "ok"].reset_index(drop=True)
        self.baseline = baseline_number(study, self.storage, self.frame)
        metrics = [m for m in METRICS if m in self.frame and self.frame[m].notna().any()]
        x, y = default_axes(study, self.storage, self.frame)
        x, y = self._x or x, self._y or y
        self._loading = True  # the pickers' observers would plot half-set axes
        try:
            self.x_picker.options = self.y_picker.options = metrics
            self.x_picker.value, self.y_picker.value = (x if x in metrics else None), (y if y in metrics else None)
        finally:
            self._loading = False
        self.trial_picker.options = [int(t) for t in self.frame["trial"]]
        self.plot()

    def plot(self) -> None:
        """Every trial faint, the Pareto front of the two metrics highlighted, the baseline starred."""
        import plotly.graph_objects as go  # optional: the lab extra

        if self._loading:
            return
        x, y = self.x_picker.value, self.y_picker.value
        if not (x and y):
            self.figure.data = []
            return
        rows = self.frame.dropna(subset=[x, y])
        knobs = knob_columns(self.frame)
        front = pareto_mask(losses(rows, [x, y])) if len(rows) else []
        groups = [("trials", rows[~front] if len(rows) else rows, {"color": "#999", "size": 9, "opacity": 0.6}),
                  ("Pareto front", rows[front] if len(rows) else rows, {"color": "#d62728", "size": 11})]
        if self.baseline is not None and self.baseline in set(rows["trial"]):
            groups.append(("baseline", rows[rows["trial"] == self.baseline],
                           {"color": "#1f77b4", "size": 16, "symbol": "star"}))
        with self.figure.batch_update():
            self.figure.data = []
            for name, part, marker in groups:
                self.figure.add_trace(go.Scatter(
                    x=part[x], y=part[y], mode="markers", name=name, marker=marker,
                    customdata=part["trial"].astype(int).tolist(),
                    hovertext=[hover_text(r, knobs, x, y) for _, r in part.iterrows()], hoverinfo="text"))
            self.figure.layout.xaxis.title = axis_label(x)
            self.figure.layout.yaxis.title = axis_label(y)
            self.figure.layout.title = f"{self.study_picker.value}: {len(rows)} trials (click a point)"
        for trace in self.figure.data:
            trace.on_click(self._clicked)

    def _clicked(self, trace, points, state) -> None:
        if points.point_inds:
            self.select(int(trace.customdata[points.point_inds[0]]))

    def select(self, trial: int) -> None:
        """Show a trial's image grid beside the baseline's, with its configuration and quality numbers."""
        rows = self.frame.set_index("trial")
        if trial not in rows.index:
            return
        self.selected = trial
        if self.trial_picker.value != trial:
            self.trial_picker.value = trial
        row = rows.loc[trial]
        self.image.value = _grid_bytes(row)
        base = rows.loc[self.baseline] if self.baseline in rows.index else None
        self.baseline_image.value = _grid_bytes(base) if base is not None else b""
        knobs = knob_columns(self.frame)
        shown = [m for m in ("latency_s", *QUALITY, "align_mean") if m in rows.columns]
        theirs = {m: with_spread(base, m) if base is not None else "" for m in shown}
        cells = "".join(f"<tr><td>{METRICS[m].label}</td><td>{with_spread(row, m)}</td><td>{theirs[m]}</td></tr>"
                        for m in dict.fromkeys(shown))
        config = ", ".join(f"{k}={_fmt(row[k])}" for k in knobs)
        which = f"baseline: trial {self.baseline}" if base is not None else "no baseline in this study"
        self.info.value = (f"<b>trial {trial}</b>: {config} ({which})<table><tr><th></th><th>trial {trial}</th>"
                           f"<th>baseline</th></tr>{cells}</table>")

    def widget(self):
        """Pickers and Refresh, the scatter, the selected trial's table, its grid beside the baseline's."""
        import ipywidgets as w

        def titled(title, image):
            return w.VBox([w.HTML(f"<b>{title}</b>"), image])

        return w.VBox([w.HBox([self.study_picker, self.x_picker, self.y_picker, self.trial_picker,
                               self.refresh_button]), self.figure,
                       self.info, w.HBox([titled("selected trial", self.image),
                                          titled("baseline (same seeds)", self.baseline_image)])])

    def show(self):
        """Display the browser in the notebook (and return self)."""
        from IPython.display import display

        display(self.widget())
        return self


def _grid_bytes(row) -> bytes:
    """The trial's contact sheet (grid.png, seeds in order) as PNG bytes enlarged for the screen, or b''."""
    if row is None or not (row.get("artifacts") or {}).get("grid"):
        return b""
    path = paths.project_root() / row["artifacts"]["grid"]  # a sweep's rows hold paths relative to the project
    if not path.is_file():
        return b""
    img = Image.open(path).convert("RGB")
    scale = max(1, 512 // img.width)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
