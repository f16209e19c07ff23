"""Errors raised for user mistakes.

Every error a user can cause by bad input derives from :class:`UserInputError` (itself a
``ValueError``), so the command line prints its message and exits non-zero without a
traceback, while programming errors still surface in full.
"""


class UserInputError(ValueError):
    """Bad input from a user: the message names the bad value and what is accepted."""


class CompositionError(UserInputError):
    """A composition text or amount that cannot be parsed (unknown symbol, bad amount, ...)."""


class ElementDataError(UserInputError):
    """An element (or element pair) for which the property tables have no value."""


class SpaceError(UserInputError):
    """A candidate-space definition that is invalid or admits no composition."""


class BundleError(UserInputError):
    """A model bundle that is missing, incomplete, tampered with or of an unknown format."""


def brief(exc: BaseException, limit: int = 160) -> str:
    """The first line of a library's error message, cut to ``limit`` characters: a reader's
    message may quote a whole line of the file it failed on."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


#: Characters of a row's text an error quotes (the rest is left out, and said to be).
EXCERPT = 24


def excerpt(text: str) -> str:
    """``text`` quoted, cut to :data:`EXCERPT` characters and marked so when longer."""
    if len(text) <= EXCERPT:
        return repr(text)
    return f"{text[:EXCERPT]!r} (first {EXCERPT} of {len(text)} characters)"


def bad_row_message(row: int, text: str, reason: str) -> str:
    """One bad row of a user's data file for an error message: its number, a short excerpt
    of its text and the reason with the full text left out."""
    return f"row {row}: {excerpt(text)}: {reason.replace(f' in {text!r}', '')}"
