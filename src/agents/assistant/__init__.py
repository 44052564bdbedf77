"""The general assistant graph."""
