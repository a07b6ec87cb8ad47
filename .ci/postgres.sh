#!/usr/bin/env bash
# Start a throw-away PostgreSQL on 127.0.0.1 (port 54329 or the next free one) (installing Debian's package if needed) and
# print the URL the tests read from MECHSCOPE_TEST_PG. Usage: export MECHSCOPE_TEST_PG=$(.ci/postgres.sh)
set -euo pipefail
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
port=54329
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done  # first free port
data=$(mktemp -d /tmp/mechscope-pg.XXXXXX)
chown postgres "$data"
su postgres -s /bin/sh -c "$bin/initdb -D $data -A trust -U postgres" >&2
su postgres -s /bin/sh -c "$bin/pg_ctl -D $data -l $data/log -w -o '-p $port -k $data -c listen_addresses=127.0.0.1' start" >&2
echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
