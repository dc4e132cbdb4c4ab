"""The pure model: events, hash chains, aggregates and policies. No I/O, no frameworks."""
