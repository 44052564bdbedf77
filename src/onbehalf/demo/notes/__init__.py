"""A demo hosted MCP server with its own OAuth 2.1 authorization server (dev and tests only).

It stands in for GitHub, Linear or Notion in `make dev` and in the test suite, so
that connecting an account (DESIGN.md §8) can be watched in a browser with no
internet and no third-party app registration.
"""
