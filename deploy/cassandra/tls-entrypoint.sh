#!/bin/bash
# Start a Cassandra 4.1 node with client and internode TLS and password authentication, from the
# certificates `csm cluster bootstrap-tls` issued into /tls (see compose.yaml, docs/operations.md).
# Runs as root before the image's own entrypoint, which drops to the cassandra user.
set -euo pipefail
node="${CSM_NODE:?set CSM_NODE to the node directory in /tls}"
conf=/etc/cassandra/cassandra.yaml
tls=/etc/cassandra/tls

install -d -o cassandra -g cassandra -m 0700 "$tls"
install -o cassandra -g cassandra -m 0600 "/tls/$node/keystore.jks" "$tls/keystore.jks"
install -o cassandra -g cassandra -m 0600 "/tls/$node/truststore.jks" "$tls/truststore.jks"
password="$(tr -d '\n' < /tls/keystore.password)"

# Replace the stock encryption blocks (each runs from its key to the next top-level key) with ours.
for block in server_encryption_options client_encryption_options; do
  sed -i "/^${block}:/,/^[a-z_]*:/{/^${block}:/d;/^[a-z_]*:/!d}" "$conf"
done
sed -i -e 's/^authenticator:.*/authenticator: PasswordAuthenticator/' \
       -e 's/^authorizer:.*/authorizer: CassandraAuthorizer/' \
       -e 's/^commitlog_sync:.*/commitlog_sync: batch/' \
       -e '/^commitlog_sync_period/d' "$conf"
cat >> "$conf" <<YAML
server_encryption_options:
  internode_encryption: all
  keystore: $tls/keystore.jks
  keystore_password: "$password"
  truststore: $tls/truststore.jks
  truststore_password: "$password"
  require_client_auth: true
  require_endpoint_verification: true
  accepted_protocols: [TLSv1.3, TLSv1.2]
client_encryption_options:
  enabled: true
  optional: false
  keystore: $tls/keystore.jks
  keystore_password: "$password"
  truststore: $tls/truststore.jks
  truststore_password: "$password"
  require_client_auth: true
  accepted_protocols: [TLSv1.3, TLSv1.2]
YAML
exec docker-entrypoint.sh cassandra -f
