"""Envelope-encrypted private key storage: the ``KeyVault`` port and its KEK providers."""

from infra.keystore.hybrid import HybridKemProvider
from infra.keystore.kek import KekError, KekProvider, KekUnavailable, LocalMasterKeyProvider
from infra.keystore.vault import KeyMaterialCorrupt, SQLiteKeyVault

__all__ = ["HybridKemProvider", "KekError", "KekProvider", "KekUnavailable", "KeyMaterialCorrupt",
           "LocalMasterKeyProvider", "SQLiteKeyVault"]
