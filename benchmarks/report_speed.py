"""`workbench report <study>` of a finished study, as a user runs it: a fresh process each time, wall time from
start to exit, and whether it imported the ML stack (it must not: it reads the store and draws).

    python -m benchmarks.report_speed quickstart --repeats 5        # after `make demo`

Target (issue 15): under 3 s on a 2-core CPU. Two cases, interleaved run by run: the study unchanged since its
last report (figures kept: what re-running the command costs) and `--force` (every figure and table drawn again).
Prints the median, IQR and range of each (one untimed run first warms the file-system cache), the import time of
`workbench.cli` alone, and the heavy modules loaded.
"""
import argparse
import statistics
import subprocess
import sys
import time

from workbench.paths import DEFAULT_STORAGE

HEAVY = ("torch", "diffusers", "transformers", "torchmetrics", "nncf", "onnxruntime")
PROBE = ("import sys, time\nt0 = time.perf_counter()\nimport workbench.cli\nt1 = time.perf_counter()\n"
         "rc = workbench.cli.main(['report', {study!r}, '--storage', {storage!r}])\n"
         "print('PROBE', t1 - t0, sorted(m for m in {heavy!r} if m in sys.modules), rc)")


def _quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q[0], q[2]


def main(study: str, storage: str, repeats: int) -> None:
    command = [sys.executable, "-m", "workbench.cli", "report", study, "--storage", storage]
    subprocess.run(command, check=True, capture_output=True)  # warm the file-system cache (and draw if needed)
    runs: dict[str, list[float]] = {"unchanged": [], "--force": []}
    for _ in range(repeats):
        for case, extra in (("unchanged", []), ("--force", ["--force"])):
            t0 = time.perf_counter()
            subprocess.run(command + extra, check=True, capture_output=True)
            runs[case].append(time.perf_counter() - t0)
    probe = subprocess.run([sys.executable, "-c", PROBE.format(study=study, storage=storage, heavy=HEAVY)],
                           check=True, capture_output=True, text=True)
    line = next(x for x in probe.stdout.splitlines() if x.startswith("PROBE"))
    import_s, loaded = float(line.split()[1]), line.split(" ", 2)[2].rsplit(" ", 1)[0]
    print(f"workbench report {study} ({storage}), a fresh process each, {repeats} runs of each case; import "
          f"workbench.cli {import_s:.2f} s; heavy modules loaded: {loaded}")
    for case, walls in runs.items():
        q1, q3 = _quartiles(walls)
        median = statistics.median(walls)
        print(f"  {case:9s}: median {median:.2f} s (IQR {q1:.2f}-{q3:.2f}, min {min(walls):.2f}, max "
              f"{max(walls):.2f}); target < 3 s: {'met' if median < 3 else 'missed'}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", nargs="?", default="quickstart", help="a finished study (default quickstart)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"its storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--repeats", type=int, default=5, help="timed runs after one untimed")
    args = p.parse_args()
    main(args.study, args.storage, args.repeats)
