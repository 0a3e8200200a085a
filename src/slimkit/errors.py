"""Errors raised by slimkit. Each message says what was wrong and what to do about it."""


class SlimkitError(Exception):
    """Base class of every error slimkit raises on purpose."""


class UserInputError(SlimkitError, ValueError):
    """An argument or option has a value slimkit cannot use."""


class ArtifactError(SlimkitError):
    """A saved artifact is missing, truncated, corrupt or not a slimkit artifact."""


class MissingDependencyError(SlimkitError, ImportError):
    """An optional package needed for this feature is not installed."""
