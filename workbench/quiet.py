"""Keep the terminal to the workbench's own lines: silence the known, harmless chatter of the libraries we call.

Each filter names one message; anything else (a real warning) still shows.
"""
from __future__ import annotations

import logging
import warnings

HARMLESS = (
    "requires torchvision (not installed); falling back",            # transformers picks its PIL image processor
    "Could not load this library",                                    # torchao's CUDA-only kernels on a CPU build
    "Unable to import `torchao` Tensor objects",                      # diffusers probing torchao on a CPU build
    "is an Enum subclass and is now natively supported by torch.compile",  # torchao registering its enums
)


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in HARMLESS)


_DONE = False


def install() -> None:
    """Idempotent: library progress bars off while loading models, known-harmless warnings filtered."""
    global _DONE
    if _DONE:
        return
    _DONE = True
    for text in HARMLESS:
        warnings.filterwarnings("ignore", message=f".*{_escape(text)}.*")
    for name in ("torchao", "torch.utils._pytree"):  # before diffusers imports them: plain loggers
        logging.getLogger(name).addFilter(_DropHarmless())
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()      # "Loading pipeline components..."
    transformers_logging.disable_progress_bar()   # "Loading checkpoint shards", "Loading weights"
    for library in (transformers_logging, diffusers_logging):
        root = library.get_logger()  # configures the library's own handler first
        root.addFilter(_DropHarmless())
        for handler in root.handlers:
            handler.addFilter(_DropHarmless())



def _escape(text: str) -> str:
    import re
    return re.escape(text)
