"""Event store adapters: SQLite (embedded default) and, later, Cassandra."""
