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
