"""Model transforms that build cached artifacts: structured pruning (`prune`), distillation recovery (`distill`),
and the one artifact cache they share (`cache`). Pure functions model -> model; knobs call them."""
