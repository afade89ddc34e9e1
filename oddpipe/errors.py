"""Errors a user can act on: each names the file, the problem and the fix."""


class OddpipeError(Exception):
    """A problem with the input or the run that a stage reports without a traceback."""


class ParamsError(OddpipeError):
    """params.yaml is invalid; one line per problem. Stages exit with code 2."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class NonFiniteError(OddpipeError):
    """Training produced a non-finite loss or gradient."""
