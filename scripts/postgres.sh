#!/usr/bin/env bash
# A private, throw-away PostgreSQL server for the tests (scripts/test.sh).
#
#   postgres.sh start DIR   initdb + start a cluster in the empty folder DIR;
#                           prints its URL (role and database "suture")
#   postgres.sh stop DIR    stop it and remove DIR (safe when start failed)
#
# Why a cluster of our own: the machine may or may not run its own cluster,
# and the tests must neither depend on it nor touch it. PostgreSQL refuses to
# run as root, so as root the cluster runs as the "postgres" user.
set -euo pipefail

cmd=${1:?usage: postgres.sh start|stop DIR}
dir=${2:?usage: postgres.sh start|stop DIR}

# The newest installed server's tools (Debian puts them off PATH).
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
as_owner() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case $cmd in
start)
	[ -x "$bin/initdb" ] || { echo "postgres.sh: no PostgreSQL server installed" >&2; exit 1; }
	[ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
	# A free port: the kernel picks one; loopback only, trust auth (nothing
	# but this machine can reach it, and it lives only for one test run).
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; exit 1; }
	# No durability: the data is thrown away after the run, and fsync would
	# make the fleet-sized tests slow. The socket goes in DIR, not /run.
	as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
		"-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
		>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
	# A plain role, not a superuser, as a real deployment would use; CREATEDB
	# for the tests' pg_url fixture, which makes a fresh database per test.
	as_owner "$bin/psql" -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres \
		-c "CREATE ROLE suture LOGIN CREATEDB" -c "CREATE DATABASE suture OWNER suture" >&2
	echo "postgresql://suture@127.0.0.1:$port/suture"
	;;
stop)
	if [ -f "$dir/data/postmaster.pid" ]; then
		as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null ||
			echo "postgres.sh: could not stop the server in $dir" >&2
	fi
	rm -rf -- "$dir"
	;;
*)
	echo "usage: postgres.sh start|stop DIR" >&2
	exit 2
	;;
esac
