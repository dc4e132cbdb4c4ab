"""Forwarding the event log to syslog collectors (SIEMs): transports and the checkpointed forwarder."""
