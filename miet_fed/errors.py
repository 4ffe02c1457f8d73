"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class MietError(Exception):
    """Something the user can fix (bad option, missing file, bad data); the message says how."""
