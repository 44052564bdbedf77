"""`CliError`: the one failure type every `onbehalf` command raises.

It lives apart from `onbehalf.cli` so that command modules (client, secrets, worker,
tickets server) never import the parser that imports them: no import cycle.
"""

from __future__ import annotations


class CliError(Exception):
    """A failure the user can act on: printed as one line on stderr with its exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
