"""Reading the developer's `.env` for the command line tools only.

The server and the tests never read it implicitly (DESIGN.md §7); the CLI and
`make dev` do, so that a developer's second terminal mints tokens with the
same dev secret the server checks. The process environment always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv


def load_project_dotenv(path: str | os.PathLike[str] = ".env") -> bool:
    """Load `.env` from the working directory unless ONBEHALF_NO_DOTENV is set."""
    if os.environ.get("ONBEHALF_NO_DOTENV"):
        return False
    file = Path(path)
    if not file.is_file():
        return False
    return load_dotenv(file, override=False)
