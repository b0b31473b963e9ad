"""explore.ipynb as a person uses it: a real JupyterLab server, headless Chromium (Debian's, through Playwright),
Run All Cells, press Generate, and wait until the images are on screen; the screenshot is kept as an artifact."""
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# headless Chromium as root: Playwright passes --no-sandbox itself; nothing may reach for the network
CHROMIUM_ARGS = ["--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TIMEOUT_MS = 300_000  # a fresh kernel imports torch and diffusers: on a loaded 2-core machine that took over 60 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _requirements():
    """Skip, with the reason, where the browser or JupyterLab is missing (`make test` installs both)."""
    pytest.importorskip("playwright.sync_api", reason="Python playwright missing: pip install -e '.[dev]'")
    pytest.importorskip("jupyterlab", reason="jupyterlab missing: pip install -e '.[dev]'")
    pytest.importorskip("ipywidgets", reason="ipywidgets missing: pip install -e '.[dev]'")
    if not Path(CHROMIUM).is_file():
        pytest.skip("no system Chromium: apt-get install -y chromium (make test does it as root)")


def start_lab(root: Path, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """JupyterLab on a free localhost port with a random token, its state in `root`; returns (process, base URL)."""
    port, token = _free_port(), secrets.token_hex(16)
    for name in ("config", "runtime", "settings", "workspaces"):
        (root / f".jupyter-{name}").mkdir(parents=True, exist_ok=True)
    env = {**env, "JUPYTER_CONFIG_DIR": str(root / ".jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(root / ".jupyter-runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(root / ".jupyter-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".jupyter-workspaces")}
    # JupyterLab's own "notified about Jupyter news?" toast would cover the page: answered no in advance
    settings = root / ".jupyter-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--allow-root", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                return server, f"{base}/lab/tree/{{path}}?token={token}"
        except OSError:
            if server.poll() is not None:
                raise AssertionError("jupyter lab exited:\n" + log.read_text()[-3000:])
            time.sleep(0.5)
    server.terminate()
    raise AssertionError("jupyter lab did not answer within 120 s:\n" + log.read_text()[-3000:])


def open_and_run_all(page, url: str, timeout_ms: int = TIMEOUT_MS):
    """Open the notebook, wait for its kernel, Run All Cells from the Run menu; returns the Generate button."""
    page.goto(url, timeout=timeout_ms)
    page.locator(".jp-Notebook").first.wait_for(timeout=timeout_ms)
    page.locator("#jp-main-statusbar", has_text="Idle").wait_for(timeout=timeout_ms)  # the kernel is up
    page.locator(".jp-Notebook .jp-Cell").first.click()  # the notebook is the current widget: Run acts on it
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    generate = page.locator("button.jupyter-button", has_text="Generate")
    generate.wait_for(state="visible", timeout=timeout_ms)
    return generate


def run_all_and_generate(url: str, screenshot: Path, timeout_ms: int = TIMEOUT_MS,
                         viewport: tuple[int, int] = (1500, 1400), then=None) -> dict:
    """Open the notebook, Run All Cells from the menu, press Generate, wait for the images; returns what was seen
    (and what `then(page)` returns, under "then", run after the screenshot)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            generate = open_and_run_all(page, url, timeout_ms)
            t0 = time.time()
            generate.click()
            page.wait_for_function(
                "() => [...document.querySelectorAll('.widget-image')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length >= 3", timeout=timeout_ms)
            seen_s = time.time() - t0
            page.get_by_text("ready").first.wait_for(timeout=timeout_ms)
            status = page.locator(".widget-html-content", has_text="ready").first.inner_text()
            timing = page.locator(".widget-html-content", has_text="generate").first.inner_text()
            metrics = page.locator(".wb-metrics").first.inner_text() if page.locator(".wb-metrics").count() else ""
            page.locator(".widget-html-content", has_text="call-time knobs").first.evaluate(
                "e => e.scrollIntoView({block: 'start'})")  # the explorer from its controls down
            page.screenshot(path=str(screenshot), full_page=True)
            return {"status": status, "timing": timing, "metrics": metrics, "seen_s": seen_s,
                    "then": then(page) if then else None}
        except Exception:
            page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-failed.png")), full_page=True)
            print(f"\nscreenshot at the failure: {screenshot.with_name(screenshot.stem + '-failed.png')}")
            raise
        finally:
            browser.close()


def save_then_click_in_the_browser(page, screenshot: Path, timeout_ms: int = TIMEOUT_MS) -> dict:
    """Save the setting (the baseline is saved first), Refresh the study browser, click the setting's point in
    the Pareto scatter and wait for its images beside the baseline's."""
    page.locator("button.jupyter-button", has_text="Save to study").click()
    saved = page.locator(".widget-html-content", has_text="saved as trial")
    saved.wait_for(timeout=timeout_ms)
    page.locator("button.jupyter-button", has_text="Refresh").click()
    points = page.locator(".js-plotly-plot .scatterlayer path.point")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .scatterlayer path.point').length >= 2",
                           timeout=timeout_ms)
    info = page.locator(".widget-html-content", has_text="baseline: trial")
    for i in range(points.count()):  # the setting's point: whichever is not the baseline's
        points.nth(i).scroll_into_view_if_needed()
        box = points.nth(i).bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            page.locator(".widget-html-content", has_text="trial 1:").wait_for(timeout=30_000)
            break
        except Exception:  # noqa: BLE001 - that was the baseline's point (trial 0): try the next one
            continue
    page.wait_for_function(  # the explorer's three sheets and the browser's two grids, all decoded
        "() => [...document.querySelectorAll('.widget-image')].filter(i => i.complete && i.naturalWidth > 0)"
        ".length >= 5", timeout=timeout_ms)
    page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-browser.png")))
    return {"saved": saved.inner_text(), "info": info.first.inner_text()}


def prepare_notebook(dest: Path, **parameters) -> Path:
    """explore.ipynb with its parameters cell overridden (papermill, not executed)."""
    import papermill

    papermill.execute_notebook(str(REPO / "notebooks" / "explore.ipynb"), str(dest), parameters=parameters,
                               prepare_only=True, progress_bar=False)
    return dest


@pytest.mark.slow
def test_explore_notebook_generates_images_in_jupyterlab(tmp_path, results_dir):
    _requirements()
    root = tmp_path / "lab"
    root.mkdir()
    prepare_notebook(root / "explore.ipynb", model="tiny-random", seeds="0-3", batch_size=4, quality=False,
                     start="{steps: 3, scheduler: unipc}", baseline="{steps: 2}",
                     storage=f"sqlite:///{root / 'results' / 'workbench.db'}")
    env = {**os.environ, "WORKBENCH_RESULTS": str(root / "results"),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = tmp_path / "jupyter.log"
    server, url = start_lab(root, env, log)
    screenshot = Path(results_dir) / "explore-lab-test.png"
    try:
        seen = run_all_and_generate(url.format(path="explore.ipynb"), screenshot,
                                    then=lambda page: save_then_click_in_the_browser(page, screenshot))
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"\nscreenshot of the explorer in JupyterLab: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    assert "ready" in seen["status"] and "steps=2" in seen["status"]  # the baseline named on screen
    assert "generate" in seen["timing"] and "4 images" in seen["timing"]
    assert "saved as trial 1 of study 'interactive'" in seen["then"]["saved"]
    assert "trial 1" in seen["then"]["info"] and "baseline: trial 0" in seen["then"]["info"]
