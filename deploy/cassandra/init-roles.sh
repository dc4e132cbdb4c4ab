#!/bin/bash
# One-shot: replicate system_auth to every node, create the service's role, and replace the default
# superuser password with a random one kept in /tls/cassandra-admin.password. Safe to re-run.
set -euo pipefail
mkdir -p ~/.cassandra
cat > ~/.cassandra/cqlshrc <<RC
[connection]
ssl = true
[ssl]
certfile = /tls/ca.pem
validate = true
usercert = /tls/client/client.pem
userkey = /tls/client/client.key
RC
host="${CASSANDRA_HOST:-cassandra-1}"
admin_file=/tls/cassandra-admin.password
if [ -s "$admin_file" ]; then admin="$(cat "$admin_file")"; else admin=cassandra; fi
cql() { cqlsh "$host" 9042 --ssl -u cassandra -p "$admin" -e "$1"; }
service_password="$(cat /tls/cassandra.password)"
cql "ALTER KEYSPACE system_auth WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3};
     CREATE ROLE IF NOT EXISTS csm WITH PASSWORD = '$service_password' AND LOGIN = true;
     GRANT CREATE ON ALL KEYSPACES TO csm;"
if [ ! -s "$admin_file" ]; then
  new_admin="$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')"
  cql "ALTER ROLE cassandra WITH PASSWORD = '$new_admin';"
  umask 077 && printf '%s' "$new_admin" > "$admin_file"
fi
echo "roles ready"
