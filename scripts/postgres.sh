#!/usr/bin/env bash
# A local PostgreSQL cluster for the team's MLflow tracking server (`make postgres`, then `make server`).
#
#   scripts/postgres.sh init start    # create the cluster, role and database once; start it
#   scripts/postgres.sh status | stop
#
# State lives in $POSTGRES_DIR (default: .postgres/ in the repository, git-ignored):
#   data/         the cluster (owned by the `postgres` system user when run as root: PostgreSQL refuses to run as root)
#   mlflow.pass   the `mlflow` role's password, generated once (mode 600; never printed)
#   backend_uri   postgresql+psycopg2://mlflow:<password>@127.0.0.1:<port>/mlflow for `mlflow server` (mode 600;
#                 SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed)
# The server listens on 127.0.0.1 only (TCP, password); its superuser is reached only through a Unix socket in data/.
# Port: $POSTGRES_PORT at init, else 5432 or the next free one; fixed in the cluster's config from then on.
# Binaries: $PG_BIN, else the folder of `initdb` on PATH, else the newest /usr/lib/postgresql/*/bin.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${POSTGRES_DIR:-$ROOT/.postgres}"
DATA="$DIR/data"
PASS_FILE="$DIR/mlflow.pass"
URI_FILE="$DIR/backend_uri"
LOG="$DATA/server.log"   # inside data/: the only folder the postgres user may write to
ROLE=mlflow
DB=mlflow

die() { echo "postgres.sh: $*" >&2; exit 1; }

pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  local newest
  newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  [ -n "$newest" ] || die "PostgreSQL is not installed: apt-get install postgresql (or set PG_BIN)"
  echo "$newest"
}
BIN="$(pg_bin)"
[ -x "$BIN/initdb" ] || die "no initdb in $BIN: apt-get install postgresql (or set PG_BIN)"

# Run a PostgreSQL program as the cluster's owner: the postgres system user when we are root, else ourselves.
# From / so that a working directory the postgres user cannot read does not matter.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
  if [ -n "${POSTGRES_PORT:-}" ]; then echo "$POSTGRES_PORT"; return; fi
  local port
  for port in $(seq 5432 5531); do
    if ! port_in_use "$port"; then echo "$port"; return; fi
  done
  die "no free port in 5432-5531; set POSTGRES_PORT"
}

# The port recorded in the cluster's config (the last `port =` line wins, as in PostgreSQL).
cluster_port() { sed -n "s/^port = \([0-9]*\).*/\1/p" "$DATA/postgresql.conf" | tail -1; }

masked_uri() { echo "postgresql+psycopg2://$ROLE:****@127.0.0.1:$(cluster_port)/$DB"; }

running() { [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

# psql as the superuser over the private socket; SQL comes on stdin so that no secret shows in `ps`, and the
# session logs no statement text (a failed CREATE ROLE would otherwise write its password to the server log).
psql_admin() {
  as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DATA" -p "$(cluster_port)" -d postgres "$@"
}

cmd_init() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "no postgres system user: apt-get install postgresql"
  fi
  # The superuser's socket is data/.s.PGSQL.<port>; Unix socket paths are limited to 107 bytes.
  [ "${#DATA}" -le 90 ] || die "POSTGRES_DIR path too long for PostgreSQL's socket ($DATA); choose a shorter one"
  mkdir -p "$DIR"
  if [ ! -s "$PASS_FILE" ]; then
    # 32 letters and digits (about 190 bits): no character needs escaping in a URI or in SQL.
    (umask 077; head -c 48 /dev/urandom | base64 -w0 | LC_ALL=C tr -dc 'A-Za-z0-9' | cut -c1-32 >"$PASS_FILE")
  fi
  chmod 600 "$PASS_FILE"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA"
    chmod 700 "$DATA"
    if [ "$(id -u)" = 0 ]; then
      chown postgres: "$DATA"
      chmod 711 "$DIR"   # postgres may pass through to data/, but not read mlflow.pass or backend_uri
      as_owner test -x "$DATA" || die "the postgres user cannot reach $DATA: make its parent folders world-searchable (chmod o+x) or set POSTGRES_DIR"
    fi
    local port
    port="$(pick_port)"
    as_owner "$BIN/initdb" -D "$DATA" -E UTF8 --locale=C --auth-local=peer --auth-host=scram-sha-256 \
      --no-instructions >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    as_owner tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# scripts/postgres.sh: TCP on loopback only, the socket private to the cluster's owner.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DATA'
unix_socket_permissions = 0700
password_encryption = scram-sha-256
EOF
    echo "initialised PostgreSQL cluster in $DATA (port $port)"
  fi
  (umask 077; echo "postgresql+psycopg2://$ROLE:$(cat "$PASS_FILE")@127.0.0.1:$(cluster_port)/$DB" >"$URI_FILE")
  chmod 600 "$URI_FILE"
  echo "backend URI: $(masked_uri) (with the password: $URI_FILE)"
}

cmd_start() {
  [ -f "$DATA/PG_VERSION" ] || die "no cluster in $DATA: run scripts/postgres.sh init first"
  if running; then
    echo "PostgreSQL already running on 127.0.0.1:$(cluster_port)"
  else
    port_in_use "$(cluster_port)" && die "port $(cluster_port) is taken by another program; change 'port' in $DATA/postgresql.conf"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null \
      || { as_owner tail -n 20 "$LOG" >&2 || true; die "PostgreSQL did not start (log: $LOG)"; }
    echo "PostgreSQL started on 127.0.0.1:$(cluster_port)"
  fi
  local password
  password="$(cat "$PASS_FILE")"
  # Create the role and database if missing; (re)set the password from mlflow.pass so the two always agree.
  psql_admin <<SQL
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') AS create_role \gset
\if :create_role
CREATE ROLE $ROLE LOGIN;
\endif
ALTER ROLE $ROLE WITH LOGIN PASSWORD '$password';
SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB') AS create_db \gset
\if :create_db
CREATE DATABASE $DB OWNER $ROLE;
\endif
SQL
  echo "database $DB ready for role $ROLE: $(masked_uri)"
}

cmd_stop() {
  if running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    echo "PostgreSQL stopped"
  else
    echo "PostgreSQL not running"
  fi
}

cmd_status() {
  if running; then
    echo "running on 127.0.0.1:$(cluster_port); backend URI: $(masked_uri) (with the password: $URI_FILE)"
  elif [ -f "$DATA/PG_VERSION" ]; then
    echo "stopped (cluster in $DATA)"; return 3
  else
    echo "no cluster in $DATA (scripts/postgres.sh init start)"; return 3
  fi
}

[ $# -gt 0 ] || die "usage: scripts/postgres.sh init|start|stop|status ... (several run in order)"
for cmd in "$@"; do
  case "$cmd" in
    init) cmd_init ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) die "unknown command '$cmd': use init, start, stop or status" ;;
  esac
done
