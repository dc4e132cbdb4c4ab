"""Command messages and their handlers: load, authorise, decide, append."""
