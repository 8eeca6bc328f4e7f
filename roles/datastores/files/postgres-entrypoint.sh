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

# TLS 1.3 only, with the host's certificate (tls.key, tls.crt, ca.crt) mounted at
# POSTGRES_TLS_DIR; pg_hba.conf then admits `hostssl` connections alone.
set --
if [ -n "${POSTGRES_TLS_DIR:-}" ]; then
    set -- -c ssl=on -c ssl_min_protocol_version=TLSv1.3 \
        -c ssl_cert_file="$POSTGRES_TLS_DIR/tls.crt" -c ssl_key_file="$POSTGRES_TLS_DIR/tls.key" \
        -c ssl_ca_file="$POSTGRES_TLS_DIR/ca.crt"
fi

exec postgres -D "$PGDATA" \
    -c listen_addresses="$POSTGRES_LISTEN" -c port="$POSTGRES_PORT" -c hba_file="$POSTGRES_HBA_FILE" \
    -c unix_socket_directories= -c max_connections=200 -c log_line_prefix='%m [%p] ' "$@"
