"""Skipping work inside the sampling loop: the mechanisms behind the skip-work knobs (workbench.knobs).

deepcache      feature caching across steps (Ma et al., CVPR 2024): the deep UNet path reused, the shallow one rerun
tokens         token downsampling of self-attention keys and values (ToDo, Smith et al. 2024)
early_stop     end the loop when the latent stops changing, decode the scheduler's clean-sample estimate
prompt_cache   text-encoder outputs kept per (text encoder, prompt, precision) across batches, trials and presses
The tiny VAE decoder distilled from the model's own is a cached artifact: workbench.compress.tiny_vae.
"""
