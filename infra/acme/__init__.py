"""ACME adapters: the nonce store shared by a server's processes, the http-01 fetch, and the background validator."""
