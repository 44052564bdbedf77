"""The demo MCP servers of `make dev` and the suite: not for production use."""
