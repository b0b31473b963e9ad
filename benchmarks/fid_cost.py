"""Benchmark: what the distribution metrics cost on this CPU at N images (reference features, FID with its
bootstrap interval, KID, CMMD), each timed once after the Inception network is loaded."""
import argparse
import tempfile
import time
from pathlib import Path

import torch

from workbench.measure import clip_score, cmmd, fid, kid
from workbench.world.render import reference_images, render, sample_scenes


def main(n: int) -> None:
    device = torch.device("cpu")
    cache = Path(tempfile.mkdtemp(prefix="wb-fid-"))
    times = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t0
        return out

    timed("load Inception", lambda: fid.extractor(device))
    real = timed("reference features", lambda: fid.reference_features("world-test", n, lambda: reference_images(n),
                                                                        cache, device))
    timed("cached reference", lambda: fid.reference_features("world-test", n, None, cache, device))
    images = (render(sample_scenes("test", n, seed=7, start=3000), "test") * 255).round().to(torch.uint8)
    fake = timed("generated features", lambda: fid.features(images, device))
    value = timed("FID", lambda: fid.fid(fake, real))
    draws = fid.bootstrap_resamples(n)
    lo, hi = timed(f"FID interval ({draws} draws)", lambda: fid.fid_interval(fake, real, draws))
    k = timed("KID (100 subsets)", lambda: kid.kid(fake, real))
    real_images = torch.cat(list(reference_images(n)))
    emb_f = timed("CLIP embeddings (generated)", lambda: clip_score.image_embeddings(images, "reference"))
    emb_r = clip_score.image_embeddings(real_images, "reference")
    c = timed("CMMD (100 subsets)", lambda: cmmd.cmmd(emb_f, emb_r))
    print(f"N={n}, CPU threads {torch.get_num_threads()}; other real scenes vs the reference set: "
          f"FID {value:.2f} [{lo:.2f}, {hi:.2f}], KID {k[0]:.5f} ± {k[1]:.5f}, CMMD {c[0]:.4f} ± {c[1]:.4f}")
    for name, seconds in times.items():
        print(f"  {name:32s} {seconds:8.2f} s" + (f"  ({seconds / n * 1000:.0f} ms/image)" if "features" in name
                                                  and "cached" not in name else ""))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256)
    main(p.parse_args().n)
