"""Model transforms that build cached artifacts, functions model -> model (or -> scores) that the knobs call.

- `specs`: what can be asked for (methods, modes, components) and the specs that key a build; no torch.
- `cache`: the one artifact cache (key from inputs and this package's source, file lock, atomic build, cost).
- `prune` (torch-pruning channels, heads, BK-SDM blocks) and `build` (teacher samples -> prune -> recover -> save).
- `distill`: recovery and QAT distillation toward the float model (output KD + BK-SDM feature KD).
- `calibration` (inputs captured from real pipeline runs), `importance` (act x grad, sensitivity, random).
- `quantize` (NNCF PTQ / QAT with importance-kept float layers), `export` (ONNX), `runtime` (ONNX Runtime sessions
  that stand in for the diffusers components).
"""
