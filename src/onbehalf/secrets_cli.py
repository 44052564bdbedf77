"""`onbehalf secrets set|delete|list --as USER [NAME]`: manage connected accounts.

The value is read from stdin (never from the command line, where it would
land in shell history and the process list); `list` shows names only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from onbehalf.cli_errors import CliError
from onbehalf.sealing import SealingKeyError
from onbehalf.user_secrets import UserSecretError, UserSecretStore


def cmd_secrets(args: argparse.Namespace) -> int:
    if args.secrets_command == "set":
        value = sys.stdin.read().strip()
        if not value:
            raise CliError("no secret on stdin: pipe it in, e.g. `pbpaste | onbehalf secrets set`")
    else:
        value = ""
    try:
        print(asyncio.run(_run(args, value)))
    except (UserSecretError, SealingKeyError) as exc:
        raise CliError(str(exc)) from None
    return 0


async def _run(args: argparse.Namespace, value: str) -> str:
    store = UserSecretStore()
    try:
        if args.secrets_command == "set":
            await store.set(args.user, args.name, value)
            return f"stored {args.name!r} for {args.user}"
        if args.secrets_command == "delete":
            deleted = await store.delete(args.user, args.name)
            return f"deleted {args.name!r} for {args.user}" if deleted else (
                f"{args.user} has no {args.name!r}"
            )
        return "\n".join(await store.names(args.user))
    finally:
        await store.aclose()
