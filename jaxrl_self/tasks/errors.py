"""Errors raised at the data edge: a file or dataset that cannot be read as a task."""


class DataError(ValueError):
    """A task's data is missing or malformed.

    The message is meant for a person: it names the file (and 1-based line number and field, where
    one applies) or the place a dataset was looked for, and how to fix it.
    """
