"""The README's screenshot of the explorer: explore.ipynb in JupyterLab, driven by headless Chromium exactly as
tests/test_lab.py drives it, but with the bundled reference model and a real grid.

    .venv/bin/python scripts/explore_screenshot.py --out docs/explore.png
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_lab import prepare_notebook, run_all_and_generate, start_lab  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/explore.png")
    p.add_argument("--seeds", default="0-15")
    p.add_argument("--start", default="{steps: 10, scheduler: unipc}", help="the setting shown against the baseline")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="explore-shot-") as tmp:
        root = Path(tmp)
        prepare_notebook(root / "explore.ipynb", model="reference", seeds=args.seeds, batch_size=8, quality=True,
                         start=args.start, baseline="{}", storage=f"sqlite:///{root / 'results' / 'workbench.db'}")
        env = {**os.environ, "WORKBENCH_RESULTS": str(root / "results"),
               "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        server, url = start_lab(root, env, root / "jupyter.log")
        try:
            seen = run_all_and_generate(url.format(path="explore.ipynb"), Path(args.out).resolve(),
                                        viewport=(1500, 1250))
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"{args.out}: {seen['status']}\n{seen['timing']}\nGenerate to images on screen: {seen['seen_s']:.1f} s")


if __name__ == "__main__":
    main()
