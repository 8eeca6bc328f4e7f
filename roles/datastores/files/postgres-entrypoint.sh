#!/bin/sh
# Initialises the cluster on first start (empty volume), then runs PostgreSQL in the foreground.
set -eu
PGDATA=/var/lib/gekko/postgres/data
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
: "${POSTGRES_USER:=gekko}" "${POSTGRES_DB:=gekko}"
: "${POSTGRES_LISTEN:=127.0.0.1}" "${POSTGRES_PORT:=5432}"
# Who may connect: the role's pg_hba.conf, mounted read-only (initdb's own admits loopback only).
: "${POSTGRES_HBA_FILE:=$PGDATA/pg_hba.conf}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 --encoding=UTF8 --locale=C
    rm -f "$pwfile"
    echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" \
        | postgres --single -D "$PGDATA" -c unix_socket_directories= postgres >/dev/null
fi

exec postgres -D "$PGDATA" \
    -c listen_addresses="$POSTGRES_LISTEN" -c port="$POSTGRES_PORT" -c hba_file="$POSTGRES_HBA_FILE" \
    -c unix_socket_directories= -c max_connections=200 -c log_line_prefix='%m [%p] '
