#!/bin/bash
# ClickHouse entrypoint wrapper of deploy/compose.yaml: writes the npsflow users from the compose secrets, then runs
# the image's own /entrypoint.sh. Runs at every start, so a rotated secret file takes effect on restart.
#
#   npsflow         the writer (NPSFLOW_CLICKHOUSE_DSN=http://npsflow@clickhouse:8123/npsflow): migrations, sinks, reads
#   npsflow_reader  Grafana's read-only user (sinks/README.md "A read-only user for Grafana and BI"): readonly = 1,
#                   SELECT on npsflow.* (tables and views; the views are SQL SECURITY INVOKER), and
#                   max_execution_time changeable in readonly mode (the Grafana plugin sets it on every query)
#   default         removed (CLICKHOUSE_SKIP_USER_SETUP=1 keeps the image from creating its own)
#
# Only SHA-256 hashes of the passwords are written (users.d inside the container, never in the repository).
set -euo pipefail
secrets="${NPSFLOW_SECRETS_DIR:-/run/secrets}"                     # overridable for the test suite only
users_d="${CLICKHOUSE_USERS_D:-/etc/clickhouse-server/users.d}"
entrypoint="${CLICKHOUSE_ENTRYPOINT:-/entrypoint.sh}"

hash_of() {
    local file="$secrets/$1"
    if [ ! -s "$file" ]; then
        echo "users.sh: the secret $1 is missing or empty (make compose-secrets)" >&2
        exit 1
    fi
    tr -d '\r\n' < "$file" | sha256sum | cut -d' ' -f1
}

writer="$(hash_of clickhouse_npsflow_password)"
reader="$(hash_of clickhouse_reader_password)"

mkdir -p "$users_d"
cat > "$users_d/npsflow-users.xml" <<XML
<clickhouse>
  <profiles>
    <npsflow_reader>
      <readonly>1</readonly>
      <max_execution_time>60</max_execution_time>
      <constraints>
        <max_execution_time>
          <changeable_in_readonly/>
        </max_execution_time>
      </constraints>
    </npsflow_reader>
  </profiles>
  <users>
    <default remove="remove"/>
    <npsflow>
      <password_sha256_hex>${writer}</password_sha256_hex>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <grants>
        <query>GRANT ALL ON npsflow.*</query>
      </grants>
    </npsflow>
    <npsflow_reader>
      <password_sha256_hex>${reader}</password_sha256_hex>
      <networks><ip>::/0</ip></networks>
      <profile>npsflow_reader</profile>
      <quota>default</quota>
      <grants>
        <query>GRANT SELECT ON npsflow.*</query>
      </grants>
    </npsflow_reader>
  </users>
</clickhouse>
XML
chmod 0640 "$users_d/npsflow-users.xml"
chown root:clickhouse "$users_d/npsflow-users.xml" 2>/dev/null || true

exec "$entrypoint" "$@"
