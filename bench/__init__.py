"""`make bench`: per-user MCP tools against a shared client and the floor (docs/performance.md)."""
