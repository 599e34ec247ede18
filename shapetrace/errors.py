"""shapetrace's own exceptions; the CLI turns each into one line and exit status 2."""


class ShapetraceError(Exception):
    """Base of every error shapetrace raises on purpose."""


class UsageError(ShapetraceError):
    """A value the user gave is not one shapetrace can use."""


class TraceFileError(UsageError):
    """A JSON trace that cannot be read back."""


class TargetError(UsageError):
    """A model TARGET that cannot be imported, found or built."""


class InternalError(ShapetraceError):
    """A bug in shapetrace itself, never the user's model or input: reported, with exit status 3."""
