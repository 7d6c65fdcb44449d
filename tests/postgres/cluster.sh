#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for gantry's tests and benchmarks (no Docker):
#
#   tests/postgres/cluster.sh start DIR PORT   # prints the store URL on its last line
#   tests/postgres/cluster.sh stop DIR
#
# Installs Debian's postgresql when its server is missing (apt-get). The cluster lives in DIR,
# owned by the `postgres` system user when run as root (the server refuses to run as root),
# listens on 127.0.0.1:PORT only, and has one role, `gantry`, with a random password made here
# (scram-sha-256; no default password). DIR holds the URL in `url` for later callers. PORT is
# the one wanted: when something else holds it (another checkout's cluster left running, or any
# socket's local port), the next free port above it is taken, and the URL says which. Callers
# pick a PORT below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up here),
# where no connection's own end can take it between the check and the bind.
set -euo pipefail

cmd="${1:-}"; dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }

bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
  done
  return 1
}

if ! BIN="$(bindir)"; then
  command -v apt-get >/dev/null 2>&1 || { echo "cluster.sh: PostgreSQL is missing and there is no apt-get" >&2; exit 1; }
  echo "installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  BIN="$(bindir)"
fi

# As root the server runs as `postgres`; otherwise as whoever runs this.
as_owner() {
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    port="${3:?a port}"
    # One start at a time: test binaries that start together must not both make the cluster.
    mkdir -p "$dir"
    exec 9>"$dir/start.lock"
    flock 9
    if [[ -f "$dir/url" ]] && as_owner "$BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      cat "$dir/url"; exit 0
    fi
    # A stopped cluster comes back on the port its URL names, if that is still free.
    if [[ -f "$dir/url" ]]; then
      port="$(sed -E 's|.*@127\.0\.0\.1:([0-9]+)/.*|\1|' "$dir/url")"
      [[ "$port" =~ ^[0-9]+$ ]] || { echo "cluster.sh: $dir/url names no port; using $3" >&2; port="$3"; }
    fi
    wanted="$port"
    # A port is free when nothing listens on it; the server's own bind has the last word (a
    # socket can hold a port without listening), so a bind refused moves on to the next too.
    next_free() {
      while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        (( port < wanted + 99 )) || { echo "cluster.sh: ports $wanted to $port are all taken" >&2; exit 1; }
        port=$((port + 1))
      done
    }
    next_free
    [[ "$(id -u)" == 0 ]] && chown postgres "$dir"
    password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    if [[ ! -d "$dir/data" ]]; then
      pwfile="$(mktemp)"; printf '%s\n' "$password" >"$pwfile"
      [[ "$(id -u)" == 0 ]] && chown postgres "$pwfile"
      as_owner "$BIN/initdb" -D "$dir/data" -U gantry --pwfile="$pwfile" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
      rm -f "$pwfile"
      printf 'postgres://gantry:%s@127.0.0.1:%s/gantry\n' "$password" "$port" >"$dir/url.new"
    fi
    # Tests, not durability: no fsync, and room for several nodes' pools.
    while true; do
      log_from=0
      [[ -f "$dir/server.log" ]] && log_from=$(wc -c <"$dir/server.log")
      # The server must not inherit the lock (9>&-): it outlives this script.
      if as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null 9>&-; then
        break
      fi
      tail -c +"$((log_from + 1))" "$dir/server.log" | grep -q "could not bind" || {
        echo "cluster.sh: the server did not start; $dir/server.log says why" >&2; exit 1; }
      (( port < wanted + 99 )) || { echo "cluster.sh: ports $wanted to $port are all taken" >&2; exit 1; }
      port=$((port + 1))
      next_free
    done
    if [[ "$port" != "$wanted" ]]; then
      echo "cluster.sh: port $wanted is taken (by a cluster left running, if ps aux | grep 'postgres -D' shows one); using $port" >&2
      for url in "$dir/url" "$dir/url.new"; do
        if [[ -f "$url" ]]; then sed -i -E "s|@127\.0\.0\.1:[0-9]+/|@127.0.0.1:$port/|" "$url"; fi
      done
    fi
    if [[ -f "$dir/url.new" ]]; then
      PGPASSWORD="$password" "$BIN/psql" -q -h 127.0.0.1 -p "$port" -U gantry -d postgres \
        -c "CREATE DATABASE gantry" >/dev/null
      mv "$dir/url.new" "$dir/url"
    fi
    chmod 600 "$dir/url" 2>/dev/null || true
    cat "$dir/url"
    ;;
  stop)
    if [[ -d "$dir/data" ]]; then
      as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
