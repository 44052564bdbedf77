"""The server edge that `langgraph.json` names: onbehalf's, unchanged (see `onbehalf.edge`)."""

from onbehalf.edge import auth

__all__ = ["auth"]
