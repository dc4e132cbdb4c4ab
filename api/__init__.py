"""The Litestar HTTP API: thin translation of HTTP into commands and queries."""
