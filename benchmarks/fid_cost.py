"""Benchmark: time to compute FID reference statistics and FID for N generated images on this CPU."""
import tempfile
import time
from pathlib import Path

import torch

from workbench.measure import fid
from workbench.world.render import reference_images, render, sample_scenes


def main(n: int = 1000) -> None:
    device = torch.device("cpu")
    cache = Path(tempfile.mkdtemp(prefix="wb-fid-"))
    t0 = time.perf_counter()
    fid.extractor(device)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = fid.reference_stats("world-test", n, lambda: reference_images(n), cache, device)
    t_ref = time.perf_counter() - t0
    fake = (render(sample_scenes("test", n, seed=7, start=3000), "test") * 255).round().to(torch.uint8)
    t0 = time.perf_counter()
    value = fid.fid(fake, stats, device)
    t_fid = time.perf_counter() - t0
    t0 = time.perf_counter()
    fid.reference_stats("world-test", n, lambda: reference_images(n), cache, device)
    t_cached = time.perf_counter() - t0
    print(f"N={n}, CPU threads {torch.get_num_threads()}: load Inception {t_load:.1f} s; reference statistics "
          f"{t_ref:.1f} s ({t_ref / n * 1000:.0f} ms/image); FID of N images {t_fid:.1f} s; cached reference "
          f"{t_cached:.2f} s; FID(other real scenes) = {value:.2f}")


if __name__ == "__main__":
    main()
