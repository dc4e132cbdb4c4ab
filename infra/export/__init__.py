"""Export of certificates and keys in the formats Cassandra and its drivers load: PEM, DER, PKCS#12, JKS."""

from infra.export.formats import der_certificate, encrypt_pkcs8, pem_bundle, pkcs12, pkcs12_truststore
from infra.export.jks import jks_keystore, jks_truststore

__all__ = ["der_certificate", "encrypt_pkcs8", "jks_keystore", "jks_truststore", "pem_bundle", "pkcs12",
           "pkcs12_truststore"]
