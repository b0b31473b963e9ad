"""The one error type for bad input: its message is a single line naming the field and the fix."""


class ConfigError(ValueError):
    """Invalid user input (config, YAML, search space, path, storage URL, model folder)."""
