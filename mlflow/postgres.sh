#!/usr/bin/env bash
# A private PostgreSQL cluster to hold MLflow's backend store, listening on 127.0.0.1 only.
#
#   DATA=pgdata mlflow/postgres.sh start     # initialise DATA if new, start it, print the store URI
#   DATA=pgdata mlflow/postgres.sh stop
#   BACKEND=$(DATA=pgdata PORT=5433 mlflow/postgres.sh start) mlflow/server.sh
#
# Who may connect:
# - the cluster's superuser (the account that runs it) has no password: it logs in only through the Unix socket
#   inside DATA, a folder only that account can enter (peer authentication);
# - over TCP every role needs its password (scram-sha-256). The tracking server logs in as `mlflow`, which owns
#   the store's database and nothing more (no superuser, no creating roles or databases). Its password is made
#   on first start and kept in DATA.pgpass (mode 0600, libpq's password-file format); the printed URI names that
#   file (?passfile=), so the password itself is on no command line, in no environment and in no `ps` output.
# Needs PostgreSQL's server programs (Debian: apt-get install postgresql). PostgreSQL refuses to run as root:
# as root, the cluster is owned and run by the `postgres` user. Other hosts would also need TLS: this script
# sets up neither TLS nor listening beyond HOST.
set -euo pipefail
data=$(realpath -m "${DATA:-pgdata}")
host=${HOST:-127.0.0.1}
port=${PORT:-5432}
database=${DATABASE:-mlflow}
role=mlflow
passfile=$data.pgpass

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[ -x "$bindir/initdb" ] || bindir=$(dirname "$(command -v initdb || echo /missing/initdb)")
if [ ! -x "$bindir/initdb" ]; then
  echo "postgres.sh: PostgreSQL's server programs are not installed (Debian: apt-get install postgresql)" >&2
  exit 2
fi
as_owner=()
if [ "$(id -u)" = 0 ]; then as_owner=(runuser -u postgres --); fi

# the superuser, through the private socket: no password involved
admin() { "${as_owner[@]}" "$bindir/psql" -h "$data" -p "$port" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

case "${1:-start}" in
  start)
    if [ ! -f "$data/PG_VERSION" ]; then
      mkdir -p "$data"
      [ "$(id -u)" = 0 ] && chown postgres: "$data"
      "${as_owner[@]}" "$bindir/initdb" -D "$data" --auth-local=peer --auth-host=scram-sha-256 \
        >"$data.initdb.log" 2>&1 || { echo "postgres.sh: initdb failed, see $data.initdb.log" >&2; exit 1; }
    elif grep -qE '^[^#]*[[:space:]]trust([[:space:]]|$)' "$data/pg_hba.conf"; then
      echo "postgres.sh: $data trusts connections without a password (made by an older postgres.sh):" \
           "start a new DATA folder, or replace 'trust' in $data/pg_hba.conf" >&2
      exit 2
    fi
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
      -o "-c listen_addresses=$host -p $port -k $data" start >/dev/null
    # first start, the file removed, or a new cluster beside an old file: a new password
    if [ ! -s "$passfile" ] || [ -z "$(admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$role'")" ]; then
      password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
      (umask 077 && printf '*:*:*:%s:%s\n' "$role" "$password" >"$passfile")
      # on standard input, never as an argument: other users can read every process's arguments
      admin <<SQL
SELECT format(CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = '$role')
                   THEN 'ALTER ROLE %I PASSWORD %L' ELSE 'CREATE ROLE %I LOGIN PASSWORD %L' END,
              '$role', '$password') \gexec
ALTER ROLE $role NOSUPERUSER NOCREATEDB NOCREATEROLE;
SQL
    fi
    if [ -z "$(admin -c "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
      admin -c "CREATE DATABASE $database OWNER $role"
    fi
    echo "postgresql://$role@$host:$port/$database?passfile=$passfile"
    ;;
  stop)
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    ;;
  *)
    echo "usage: DATA=DIR [HOST=127.0.0.1] [PORT=5432] mlflow/postgres.sh start|stop" >&2
    exit 2
    ;;
esac
