"""A long-running `onbehalf` command (`make dev`, `make serve`) as a test drives it: started
with its output in a file, ready once its banner ends, stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BANNER_END = "Ctrl-C stops every server."


class Command:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process, self.log = process, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running(module: str, env: dict[str, str], log: Path, *, seconds: float = 180
            ) -> Iterator[Command]:
    """`python -m module` in the project root until its banner is printed; SIGINT after."""
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    command = Command(process, log)
    try:
        deadline = time.monotonic() + seconds
        while BANNER_END not in command.output():
            assert process.poll() is None, f"{module} exited early:\n{command.output()[-3000:]}"
            assert time.monotonic() < deadline, f"{module} never got ready:\n{command.output()}"
            time.sleep(0.3)
        yield command
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
