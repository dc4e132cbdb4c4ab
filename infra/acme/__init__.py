"""ACME adapters: the nonce and validation-result stores (a server's files, or Redis shared by every server), the
http-01, tls-alpn-01 and dns-01 checks, and the background validator."""
