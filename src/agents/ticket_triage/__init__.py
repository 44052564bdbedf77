"""The read-only ticket triage graph."""
