#!/usr/bin/env bash
# A private PostgreSQL cluster to hold MLflow's backend store, listening on 127.0.0.1 only.
#
#   DATA=pgdata mlflow/postgres.sh start     # initialise DATA if new, start it, print the store URI
#   DATA=pgdata mlflow/postgres.sh stop
#   BACKEND=$(DATA=pgdata PORT=5433 mlflow/postgres.sh start) mlflow/server.sh
#
# Needs PostgreSQL's server programs (Debian: apt-get install postgresql). The cluster trusts local
# connections as user `mlflow`, which is why it listens on loopback (HOST) only; a team server with
# other clients needs passwords (initdb --auth=scram-sha-256) and TLS, which this script does not set up.
# PostgreSQL refuses to run as root: as root, the cluster is owned and run by the `postgres` user.
set -euo pipefail
data=$(realpath -m "${DATA:-pgdata}")
host=${HOST:-127.0.0.1}
port=${PORT:-5432}
database=${DATABASE:-mlflow}

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[ -x "$bindir/initdb" ] || bindir=$(dirname "$(command -v initdb || echo /missing/initdb)")
if [ ! -x "$bindir/initdb" ]; then
  echo "postgres.sh: PostgreSQL's server programs are not installed (Debian: apt-get install postgresql)" >&2
  exit 2
fi
as_owner=()
if [ "$(id -u)" = 0 ]; then as_owner=(runuser -u postgres --); fi

case "${1:-start}" in
  start)
    if [ ! -f "$data/PG_VERSION" ]; then
      mkdir -p "$data"
      [ "$(id -u)" = 0 ] && chown postgres: "$data"
      "${as_owner[@]}" "$bindir/initdb" -D "$data" -U mlflow --auth=trust >"$data.initdb.log" 2>&1 \
        || { echo "postgres.sh: initdb failed, see $data.initdb.log" >&2; exit 1; }
    fi
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
      -o "-c listen_addresses=$host -p $port -k $data" start >/dev/null
    if ! "${as_owner[@]}" "$bindir/psql" -h "$host" -p "$port" -U mlflow -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
      "${as_owner[@]}" "$bindir/createdb" -h "$host" -p "$port" -U mlflow "$database"
    fi
    echo "postgresql://mlflow@$host:$port/$database"
    ;;
  stop)
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    ;;
  *)
    echo "usage: DATA=DIR [HOST=127.0.0.1] [PORT=5432] mlflow/postgres.sh start|stop" >&2
    exit 2
    ;;
esac
