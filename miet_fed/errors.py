"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class MietError(Exception):
    """Something the user can fix (bad option, missing file, bad data); the message says how."""


def user_message(exc: MietError) -> str:
    """The one line to show. A MietError raised inside a Ray actor or task arrives wrapped in a
    RayTaskError that also subclasses MietError, whose text is the remote traceback: show the
    original message instead."""
    cause = getattr(exc, "cause", None)
    while isinstance(cause, MietError) and cause is not exc:
        exc, cause = cause, getattr(cause, "cause", None)
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
