#!/bin/sh
# Initialises the cluster on first start (empty volume), then runs PostgreSQL in the foreground.
set -eu
PGDATA=/var/lib/gekko/postgres/data
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
: "${POSTGRES_USER:=gekko}" "${POSTGRES_DB:=gekko}"
: "${POSTGRES_LISTEN:=127.0.0.1}" "${POSTGRES_PORT:=5432}"
# Who may connect: the role's pg_hba.conf and pg_ident.conf, mounted read-only (initdb's own
# admit loopback only).
: "${POSTGRES_HBA_FILE:=$PGDATA/pg_hba.conf}" "${POSTGRES_IDENT_FILE:=$PGDATA/pg_ident.conf}"
# The Unix socket lives in the data volume, so the backup agent (which mounts it) reaches the
# server without a network: pgBackRest connects by socket only.
SOCKETS=/var/lib/gekko/postgres/run

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

# Continuous archiving to pgBackRest's repository when backups are on (PGBACKREST_STANZA and
# the rest of its settings come from the environment). archive_timeout bounds how old the newest
# archived WAL may be when nothing else fills a segment; the backup agent streams it meanwhile.
if [ -n "${PGBACKREST_STANZA:-}" ]; then
    set -- "$@" -c archive_mode=on -c archive_command='pgbackrest archive-push %p' \
        -c archive_timeout="${POSTGRES_ARCHIVE_TIMEOUT:-60}"
fi
# A replication slot (the backup agent's) holds back at most this much WAL, backups on or off:
# a slot left behind never fills the disk.
set -- "$@" -c max_slot_wal_keep_size="${POSTGRES_MAX_SLOT_WAL_KEEP_SIZE:-2GB}"

mkdir -p "$SOCKETS"
chmod 0700 "$SOCKETS"
exec postgres -D "$PGDATA" \
    -c listen_addresses="$POSTGRES_LISTEN" -c port="$POSTGRES_PORT" -c hba_file="$POSTGRES_HBA_FILE" \
    -c ident_file="$POSTGRES_IDENT_FILE" -c unix_socket_directories="$SOCKETS" \
    -c max_connections=200 -c log_line_prefix='%m [%p] ' "$@"
