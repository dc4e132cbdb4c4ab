"""Adapters to the outside world: event stores, buses, crypto, keystores, config, telemetry."""
