"""`onbehalf handoff put` and `onbehalf worker run`: the two ends of the token handoff.

Output contracts (docs/worker.md):

- `handoff put ID` reads the token from stdin and prints one line,
  `stored <key> ttl=<seconds>s`, e.g. `stored agent-token:run-42 ttl=597s`.
- `worker run` prints JSON lines only: one object per line, flushed as it
  arrives, ending with `{"event": "done", ...}`.

Exit codes: 0 done; 2 no usable token (missing, taken, expired, malformed,
Redis down or misconfigured); 3 rejected by the server; 4 the run failed;
5 the run paused for the user (e.g. `connect_account`: the interrupt, with its
link, is in the JSON lines; resume the thread once the user is done).
Every failure is one `onbehalf: <reason>` line on stderr (via CliError),
never a traceback and never the token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from onbehalf.cli_errors import CliError
from onbehalf.settings import HandoffSettings, describe_validation_error
from onbehalf.worker.handoff import HandoffError, TokenHandoff
from onbehalf.worker.runner import WorkerError, run_execution

PAUSED_EXIT_CODE = 5


def cmd_handoff_put(args: argparse.Namespace) -> int:
    """Store the token on stdin for the worker that will run `args.execution_id`."""
    _quiet_stderr()
    token = sys.stdin.read().strip()
    if not token:
        raise CliError(
            "no token on stdin: pipe the user's JWT in, e.g. "
            "`onbehalf token alice | onbehalf handoff put EXECUTION_ID`",
            2,
        )
    settings = _settings()

    async def put() -> tuple[str, int]:
        async with TokenHandoff(settings) as handoff:
            key = handoff.key_for(args.execution_id)
            return key, await handoff.put(args.execution_id, token, ttl=args.ttl)

    try:
        key, ttl = asyncio.run(put())
    except HandoffError as exc:
        raise CliError(str(exc), exc.exit_code) from None
    print(f"stored {key} ttl={ttl}s", flush=True)
    return 0


def cmd_worker_run(args: argparse.Namespace) -> int:
    """Take the handed-off token and stream the run as JSON lines on stdout."""
    _quiet_stderr()
    settings = _settings()
    message = " ".join(args.message)
    graph_input = {"messages": [{"role": "user", "content": message}]}

    async def run() -> bool:
        paused = False
        events = run_execution(
            args.execution_id, args.graph, graph_input, args.thread_id, settings=settings
        )
        async for event in events:
            paused = paused or event.get("event") == "interrupt"
            _emit(event)
        return paused

    try:
        paused = asyncio.run(run())
    except (HandoffError, WorkerError) as exc:
        raise CliError(str(exc), exc.exit_code) from None
    except BrokenPipeError:
        raise CliError("stdout was closed before the run finished", 4) from None
    except Exception as exc:  # the CLI boundary: one line, never a traceback
        raise CliError(f"the run failed unexpectedly ({type(exc).__name__}: {exc})", 4) from None
    if paused:
        raise CliError(
            "the run paused for the user (see the interrupt line): resume its thread once "
            "they are done", PAUSED_EXIT_CODE,
        )
    return 0


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def _settings() -> HandoffSettings:
    try:
        return HandoffSettings()
    except Exception as exc:  # pydantic.ValidationError
        raise CliError(
            f"invalid worker settings: {describe_validation_error(exc)}", 2
        ) from None


def _quiet_stderr() -> None:
    """Keep stderr to the one reason line: library log records and warnings are dropped.

    Without a handler Python prints WARNING records (and `warnings.warn`)
    straight to stderr; an embedding application configures logging itself.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    logging.captureWarnings(True)
