"""The thread title graph: a short title for a conversation, with no token and no MCP."""
