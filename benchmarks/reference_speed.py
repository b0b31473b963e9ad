"""Benchmark: 16 images at 25 DPM++ 2M steps, CFG 7.5, with the bundled model on this machine's CPU.

Target (issue 3): at most 10 s. Prints the median and spread of 5 timed runs after one warm-up.
"""
import argparse
import statistics
import time

import torch

from workbench.config import TrialConfig
from workbench.models import load_pipeline
from workbench.prompts import load_prompts
from workbench.trial import generate


def main(repeats: int = 5) -> None:
    cfg = TrialConfig(scheduler="dpm++2m", steps=25, cfg_scale=7.5, seeds="0-15", batch_size=16)
    pipe = load_pipeline("reference")  # generate() swaps in the configured scheduler on every call
    prompts = load_prompts("world-v1")[:16]
    generate(pipe, cfg, prompts, cfg.seed_list, 64, torch.device("cpu"))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(pipe, cfg, prompts, cfg.seed_list, 64, torch.device("cpu"))
        times.append(time.perf_counter() - t0)
    print(f"16 images, 25 steps DPM++ 2M, CFG 7.5, CPU threads {torch.get_num_threads()}: "
          f"median {statistics.median(times):.2f} s, min {min(times):.2f}, max {max(times):.2f} over {repeats} runs "
          f"(target <= 10 s: {'met' if statistics.median(times) <= 10 else 'MISSED'})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed runs after the warm-up")
    main(p.parse_args().repeats)
