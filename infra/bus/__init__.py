"""Event buses: the outbox relay to Kafka and the projectors' Kafka feed (the local bus is the store's own tail)."""
