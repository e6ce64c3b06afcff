"""The one exception the CLI turns into a clear, one-line message."""

from pathlib import Path


class DreamError(Exception):
    """A problem the user can fix: what went wrong, and what to do about it."""

    def __init__(self, problem: str, fix: str = ""):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}" if self.fix else self.problem


def not_a_file(what: str, path, fix: str) -> DreamError:
    """The error for a path that should name a file and does not: it is missing, or it is
    something else (a folder, a device)."""
    state = "is not a regular file" if Path(path).exists() else "does not exist"
    return DreamError(f"{what} {path} {state}", fix)
