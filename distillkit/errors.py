"""Errors that are the user's to fix: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input (config value, missing dataset, corrupt file). Printed without a traceback."""


class DivergedError(UserError):
    """A loss became NaN or exploded; the message says what and where the last good state is."""


class SealedTestSetError(RuntimeError):
    """A code path read the real test split outside the final evaluation (a generator, scorer, sampler or
    a selection on validation): a bug that would make the reported number unfair, never the user's to fix."""
