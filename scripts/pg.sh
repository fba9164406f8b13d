#!/usr/bin/env bash
# Run the machine's PostgreSQL for the integration tests (Debian's postgresql
# package, installed with apt-get if missing; no Docker).
#
# Usage: scripts/pg.sh COMMAND
#   up      install PostgreSQL if missing, start its cluster if stopped, make sure it
#           answers on 127.0.0.1:5432, create role and database "exactly"
#           (password "exactly"), print the URL
#   down    stop the cluster, but only if `up` started it
#   status  show the clusters and whether `up` started one
#
# Environment:
#   EXACTLY_STATE         where the "we started it" marker lives (default /tmp/exactly-kafka)
#   EXACTLY_PG_TIMEOUT    seconds to wait for the server (default 60)
# Must run as root (it runs psql as the postgres OS user).
set -euo pipefail

readonly STATE="${EXACTLY_STATE:-/tmp/exactly-kafka}"
readonly MARKER="$STATE/postgres/started-by-pg.sh"
readonly PORT=5432
readonly ROLE=exactly DB=exactly PASSWORD=exactly
readonly URL="postgres://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB?sslmode=disable"
readonly TIMEOUT="${EXACTLY_PG_TIMEOUT:-60}"
INSTALLED_NOW=0

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

need_root() {
	[[ $(id -u) -eq 0 ]] || die "run as root (needs apt-get, pg_ctlcluster and psql as the postgres user)"
}

ensure_installed() {
	if command -v pg_lsclusters >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
		return 0
	fi
	command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is not available"
	log "PostgreSQL not found; installing it with apt-get (a minute or two)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q postgresql >/dev/null
	command -v pg_lsclusters >/dev/null || die "pg_lsclusters still missing after installing postgresql"
	INSTALLED_NOW=1
}

# find_cluster: prints "VERSION NAME PORT STATUS" of the cluster on port 5432, else
# of the first cluster; nothing if there is none.
find_cluster() {
	local ver name port status first="" line
	while read -r ver name port status _; do
		[[ -n $ver ]] || continue
		line="$ver $name $port $status"
		[[ -n $first ]] || first=$line
		if [[ $port == "$PORT" ]]; then
			echo "$line"
			return 0
		fi
	done < <(pg_lsclusters --no-header 2>/dev/null || true)
	[[ -z $first ]] || echo "$first"
}

psql_admin() {
	# As the postgres OS user over the Unix socket; cd / so psql can read its cwd.
	(cd / && runuser -u postgres -- psql -X -q -p "$PORT" -v ON_ERROR_STOP=1 "$@")
}

wait_ready() {
	local deadline=$((SECONDS + TIMEOUT))
	until pg_isready -q -h 127.0.0.1 -p "$PORT" -t 2; do
		if ((SECONDS >= deadline)); then
			pg_lsclusters >&2 || true
			local logf
			for logf in /var/log/postgresql/postgresql-*.log; do
				[[ -f $logf ]] || continue
				log "last 50 lines of $logf:"
				tail -n 50 "$logf" >&2 || true
			done
			die "PostgreSQL does not answer on 127.0.0.1:$PORT after ${TIMEOUT}s (check listen_addresses and port in its postgresql.conf)"
		fi
		sleep 0.5
	done
}

cmd_up() {
	need_root
	ensure_installed
	local t0=$SECONDS info ver name port status
	info="$(find_cluster)"
	if [[ -z $info ]]; then
		ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
		[[ -n $ver ]] || die "no PostgreSQL version under /usr/lib/postgresql"
		log "no cluster found; creating $ver/main on port $PORT"
		pg_createcluster "$ver" main --port "$PORT" >/dev/null
		info="$(find_cluster)"
		[[ -n $info ]] || die "pg_createcluster did not create a cluster"
	fi
	read -r ver name port status <<<"$info"
	[[ $port == "$PORT" ]] || die "cluster $ver/$name uses port $port, not $PORT; the tests expect 127.0.0.1:$PORT (set EXACTLY_PG_URL to use another server)"
	if [[ $status == online* && $INSTALLED_NOW == 1 ]]; then
		# The package's install started it for us: ours to stop.
		log "cluster $ver/$name was started by the package install"
		mkdir -p "$(dirname "$MARKER")"
		printf '%s %s\n' "$ver" "$name" >"$MARKER"
	elif [[ $status == online* ]]; then
		if [[ -f $MARKER ]]; then
			log "cluster $ver/$name already running (started by an earlier 'pg.sh up')"
		else
			log "cluster $ver/$name already running (not started by us, so 'down' will leave it running)"
		fi
	else
		log "starting cluster $ver/$name"
		pg_ctlcluster "$ver" "$name" start || die "pg_ctlcluster $ver $name start failed (log: /var/log/postgresql/postgresql-$ver-$name.log)"
		mkdir -p "$(dirname "$MARKER")"
		printf '%s %s\n' "$ver" "$name" >"$MARKER"
	fi
	wait_ready

	psql_admin -d postgres <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
  ELSE
    ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
  END IF;
END
\$\$;
SQL
	if [[ $(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'") != 1 ]]; then
		psql_admin -d postgres -c "CREATE DATABASE $DB OWNER $ROLE" >/dev/null
		log "created database $DB"
	fi
	# Prove the URL works the way the tests use it: TCP, password auth.
	PGPASSWORD=$PASSWORD PGCONNECT_TIMEOUT=10 psql -X -q -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DB" -tAc 'SELECT 1' >/dev/null ||
		die "cannot log in as $ROLE over TCP at 127.0.0.1:$PORT (check pg_hba.conf allows scram/md5 for 127.0.0.1/32)"
	log "PostgreSQL $ver ($name) ready on 127.0.0.1:$PORT in $((SECONDS - t0))s"
	echo "$URL"
}

cmd_down() {
	if [[ ! -f $MARKER ]]; then
		log "PostgreSQL was not started by 'pg.sh up'; leaving it alone"
		return 0
	fi
	need_root
	local ver name
	read -r ver name <"$MARKER"
	log "stopping cluster $ver/$name (started by 'pg.sh up')"
	pg_ctlcluster "$ver" "$name" stop -m fast || die "pg_ctlcluster $ver $name stop failed"
	rm -f "$MARKER"
	log "down"
}

cmd_status() {
	pg_lsclusters 2>/dev/null || echo "PostgreSQL not installed"
	if [[ -f $MARKER ]]; then echo "started by pg.sh up: $(cat "$MARKER")"; fi
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
	;;
esac
