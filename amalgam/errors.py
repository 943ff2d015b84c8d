"""Errors that the CLI prints as one line (a traceback only with ``--debug``)."""


class AmalgamError(Exception):
    """A problem with the user's input or files, explained in one line."""


class RecipeError(AmalgamError):
    """A recipe key holds something invalid.

    Args:
        path: dotted key path, e.g. ``teachers.seg-a.model.arch``.
        message: what was expected.
    """

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)
