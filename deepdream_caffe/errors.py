"""The one exception the CLI turns into a clear, one-line message."""


class DreamError(Exception):
    """A problem the user can fix: what went wrong, and what to do about it."""

    def __init__(self, problem: str, fix: str = ""):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}" if self.fix else self.problem
