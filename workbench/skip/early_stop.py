"""Early stop on latent change: end the sampling loop once the latent stops changing and decode the scheduler's
current clean-sample estimate (x0) instead of the noisy latent.

After each step the relative change of every image's latent, ||x_i - x_{i-1}|| / ||x_{i-1}||, is compared with
the tolerance; from the minimum step on, an image whose change falls below it stops: its latent is replaced by the
x0 estimate of that step and held there. An image's result therefore does not depend on the batch it is in
(EDM's rule: batching never changes images). The UNet keeps running on the whole batch until every image has
stopped (a batch cannot shrink inside diffusers' loop); then the loop is interrupted (`pipe._interrupt`, the
pipelines' own flag) and the remaining steps call nothing. Rows count both: the steps each image needed, and the
UNet calls the batch made.

Which images stopped, at which step, and their held estimates stay on the device (`torch.where`, no branch on a
tensor). Only the loop's end needs the host to know, and on CUDA it reads "every image stopped" one step late: each
step copies the answer to pinned memory without blocking and waits for the step before's copy, whose work finished
while this step's is already queued behind it, so the GPU never runs dry; the batch may make one more UNet call than
a blocking read would, which changes no image (their latents are held). On a CPU the answer is read at once.

The x0 estimate is the scheduler's own: `pred_original_sample` where its step returns one (DDIM, DDPM, Euler,
Heun, LMS, LCM...), the last converted model output of multistep solvers that predict x0 (DPM-Solver++, UniPC),
else x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) from its noise schedule for epsilon- or v-prediction (PNDM).
"""
from __future__ import annotations

import torch

from workbench.models import to_device


def clean_estimate(scheduler, out, model_output, timestep, sample) -> torch.Tensor | None:
    """The scheduler's estimate of the clean sample at this step, or None if it gives none."""
    x0 = getattr(out, "pred_original_sample", None)
    if x0 is None:
        x0 = getattr(out, "denoised", None)
    if x0 is not None:
        return x0
    config = scheduler.config
    predicts_x0 = (config.get("algorithm_type") in ("dpmsolver++", "sde-dpmsolver++")
                   or config.get("predict_x0") is True)
    outputs = getattr(scheduler, "model_outputs", None)
    if predicts_x0 and outputs and outputs[-1] is not None:
        return outputs[-1]
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None or getattr(scheduler, "sigmas", None) is not None:
        return None
    on_device = scheduler.__dict__.get("_workbench_alphas")  # copied once a sampler, looked up without a host read
    if on_device is None or on_device.device != sample.device:
        on_device = scheduler.__dict__["_workbench_alphas"] = to_device(alphas, sample.device)
    t = to_device(torch.as_tensor(timestep, dtype=torch.long).reshape(1), on_device.device)  # a host int: no wait
    a = on_device.index_select(0, t).reshape(()).to(sample.dtype)
    if config.get("prediction_type") == "epsilon":
        return (sample - (1 - a).sqrt() * model_output) / a.sqrt()
    if config.get("prediction_type") == "v_prediction":
        return a.sqrt() * sample - (1 - a).sqrt() * model_output
    return None


class EarlyStop:
    """The step recorder and `callback_on_step_end` of one pipeline: install with `watch(scheduler)` after each
    scheduler swap, pass `callback` to the pipeline call. `stops` holds, per finished image, the steps it ran."""

    def __init__(self, tolerance: float, min_steps: int, lagged: bool | None = None):
        self.tolerance, self.min_steps = tolerance, min_steps
        self.lagged = lagged  # read "all stopped" a step late without blocking; None: on CUDA only
        self.stops: list[int] = []       # steps each generated image ran, over every call so far
        self.calls: list[int] = []       # steps each pipeline call (batch) ran
        self._reset()

    def _reset(self) -> None:
        self.x0 = self.previous = self.frozen = self.stopped = self.at = None
        self.steps = 0
        self._pending = None  # the last step's "all stopped", copied to the host, and the event after its copy

    def watch(self, scheduler) -> None:
        """Record the clean-sample estimate of every step of this scheduler (its `step`, wrapped on the instance)."""
        step = type(scheduler).step.__get__(scheduler)

        def recording(model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
            out = step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
            self.x0 = clean_estimate(scheduler, out, model_output, timestep, sample)
            if self.x0 is None:
                raise ValueError(f"early stop: {type(scheduler).__name__} gives no clean-sample estimate to decode")
            return out if return_dict else tuple(out.values())

        scheduler.step = recording
        self.finish()

    def callback(self, pipe, step: int, timestep, kwargs: dict) -> dict:
        latents = kwargs["latents"]
        self.steps = step + 1
        if self.stopped is None:
            n = latents.shape[0]
            self.stopped = torch.zeros(n, dtype=torch.bool, device=latents.device)
            self.at = torch.zeros(n, dtype=torch.long, device=latents.device)  # 0: not stopped (yet)
            self.frozen = torch.zeros_like(latents)
            if self.lagged is None:
                self.lagged = latents.device.type == "cuda"
        elif self.steps >= self.min_steps:
            change = (latents - self.previous).flatten(1).norm(dim=1) / self.previous.flatten(1).norm(dim=1)
            newly = ((change < self.tolerance) & ~self.stopped)[:, None, None, None]
            self.frozen = torch.where(newly, self.x0.to(latents.dtype), self.frozen)
            self.at = torch.where(newly.flatten(), self.steps, self.at)
            self.stopped = self.stopped | newly.flatten()
            kwargs["latents"] = torch.where(self.stopped[:, None, None, None], self.frozen, latents)
        self.previous = latents.clone()  # the sampler's own latent: a held image's change is measured no more
        if self._all_stopped():
            pipe._interrupt = True  # the pipelines' own flag: the remaining steps `continue`
        return kwargs

    def _all_stopped(self) -> bool:
        """Whether every image has stopped: at once on a CPU; on CUDA the step before's answer (module docstring)."""
        if self.steps < self.min_steps:  # none can have stopped yet: nothing to ask
            return False
        done = self.stopped.all()
        if not self.lagged:
            return bool(done)
        previous, cuda = self._pending, done.is_cuda
        copy = torch.empty((), dtype=torch.bool, pin_memory=cuda)
        copy.copy_(done, non_blocking=cuda)
        event = torch.cuda.Event() if cuda else None
        if cuda:
            event.record()
        self._pending = (copy, event)
        if previous is None:
            return False
        if previous[1] is not None:
            previous[1].synchronize()  # the step before's work, while this step's runs
        return bool(previous[0])

    def finish(self) -> None:
        """Record the steps each image and the batch of the last pipeline call ran (called when the next call
        starts, and before the counts are read)."""
        if self.at is not None:
            at = [a if a else self.steps for a in self.at.tolist()]
            self.stops.extend(at)
            self.calls.append(self.steps)  # the steps the batch's loop ran (after every image stopped: interrupted)
        self._reset()
