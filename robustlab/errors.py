"""The one exception robustlab raises for bad input: a one-line message with the fix."""


class RobustlabError(ValueError):
    """Bad input from the user: the message names the problem and the fix, on one line."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; fix: {fix}")
        self.problem, self.fix = problem, fix

    def __reduce__(self):
        """Pickle by problem and fix, so the error crosses process boundaries (spawned DDP ranks)."""
        return type(self), (self.problem, self.fix)


class ReportWarning(UserWarning):
    """A report page that could not be written (``report.json`` is unaffected); an error in the tests."""
