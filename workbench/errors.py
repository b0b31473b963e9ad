"""The one error type for bad input: its message is a single line naming the field and the fix."""
from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """Invalid user input (config, YAML, search space, path, storage URL, model folder)."""


def did_you_mean(name: str, options) -> str:
    """'; did you mean 'cfg_scale'?' for a close option, else '; known: a, b, c' (appended to an error line)."""
    options = [str(o) for o in options]
    close = difflib.get_close_matches(str(name), options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(options)}"
