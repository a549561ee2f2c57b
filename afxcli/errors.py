"""User-facing errors: one line, no traceback, non-zero exit (the CLI catches these)."""


class AfxError(Exception):
    """An error caused by the user's input (a file, a value, a spec), reported as one line."""
