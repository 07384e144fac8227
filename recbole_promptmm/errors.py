"""Bad-input errors shared across layers; this module imports nothing of the package, so any module can raise them
(every entry point reports a ``ValueError`` as bad input: one line, exit status 2)."""


class ConfigError(ValueError):
    """A config that cannot run: unknown keys, wrong types or ranges, missing files."""
