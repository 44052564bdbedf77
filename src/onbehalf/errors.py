"""Errors of the per-user MCP kit, written for the person who must act on them."""

from __future__ import annotations


class OnBehalfError(Exception):
    """Base of every error the kit raises on purpose; the message is safe to show a user."""


class ServersFileError(OnBehalfError, ValueError):
    """The MCP servers file (or MCP_SERVERS) is malformed; the message names server and key."""


class MissingUserToken(OnBehalfError):
    """A graph that acts on behalf of a user was started without one."""


class UnsafeTokenPath(OnBehalfError):
    """The token was passed somewhere it would be persisted."""


class UserTokenExpired(OnBehalfError):
    """The user's token expired before or during the run."""


class UserTokenRejected(OnBehalfError):
    """The token (or its sealed form) could not be verified or opened."""
