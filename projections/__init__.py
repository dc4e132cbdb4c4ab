"""Projectors and read models: fold events into query tables, checkpointed and rebuildable."""
