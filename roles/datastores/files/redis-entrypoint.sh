#!/bin/sh
# Writes the configuration to tmpfs (the root file system is read-only) and runs Redis.
set -eu
: "${REDIS_PASSWORD:?REDIS_PASSWORD must be set}"
: "${REDIS_LISTEN:=127.0.0.1}" "${REDIS_PORT:=6379}"
conf=$(mktemp)
cat > "$conf" <<CONF
bind $REDIS_LISTEN
port $REDIS_PORT
protected-mode yes
requirepass $REDIS_PASSWORD
dir /var/lib/gekko/redis
appendonly yes
appendfsync everysec
save 60 1000
maxmemory-policy noeviction
CONF
exec redis-server "$conf"
