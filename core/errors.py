"""Errors of the dataset and the distributed engine, in a module with no heavy imports, so that
the command line can catch them (with the other errors a user can cause) without loading torch,
scikit-learn or Ray when the subcommand does not need them (`serve`'s process)."""


class DatasetError(ValueError):
    """A dataset folder cannot be used; the message says what is wrong."""


class EngineError(RuntimeError):
    """Ray could not start, or a worker does not hold the same checkpoint."""
