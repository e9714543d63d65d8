"""Error types that callers may catch to skip or stop, each carrying a message that says what and where."""


class HybridTowerError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(HybridTowerError, ValueError):
    """A configuration value, preset name or override is invalid."""


class CheckpointError(HybridTowerError):
    """A checkpoint is missing, unreadable or does not match the model it is loaded into."""
