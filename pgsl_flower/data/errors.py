"""Error type raised for missing, malformed or corrupt dataset files."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset file is missing, malformed or corrupt.

    Every message names the file (full path) and what is wrong with it and, when
    files are missing, which files to put where. The class takes a single message
    argument so that it pickles cleanly across Flower/Ray worker processes.
    """
