"""The audit trail's moving parts: signing keys, the checkpointer, and verification runs."""
