#!/bin/sh
# Writes the configuration to tmpfs (the root file system is read-only) and runs Redis.
set -eu
: "${REDIS_PASSWORD:?REDIS_PASSWORD must be set}"
: "${REDIS_GATEWAY_PASSWORD:?REDIS_GATEWAY_PASSWORD must be set}"
: "${REDIS_SERVICES_PASSWORD:?REDIS_SERVICES_PASSWORD must be set}"
: "${REDIS_LISTEN:=127.0.0.1}" "${REDIS_PORT:=6379}"
conf=$(mktemp)
cat > "$conf" <<CONF
bind $REDIS_LISTEN
protected-mode yes
dir /var/lib/gekko/redis
appendonly yes
appendfsync everysec
save 60 1000
maxmemory-policy noeviction
# One user per kind of client; no default user. gekko-admin is the health check and the
# deployment's (dynamic configuration); the gateway and the services may not run the
# commands Redis calls dangerous (FLUSHALL, CONFIG, KEYS, DEBUG, ...).
user default off
user gekko-admin on >$REDIS_PASSWORD ~* &* +@all
user gekko-gateway on >$REDIS_GATEWAY_PASSWORD ~* &* +@all -@dangerous
user gekko-services on >$REDIS_SERVICES_PASSWORD ~* &* +@all -@dangerous
CONF
if [ -n "${REDIS_MONITOR_PASSWORD:-}" ]; then
    # The Prometheus exporter: server statistics and settings, never a key's value.
    echo "user gekko-monitor on >$REDIS_MONITOR_PASSWORD -@all +@connection +info +ping +config|get +slowlog|get +slowlog|len +latency|latest +client|list +client|info +dbsize +select +cluster|info +module|list +memory|stats" >> "$conf"
fi
if [ -n "${REDIS_TLS_DIR:-}" ]; then
    # TLS 1.3 only, on the one port, and clients must show a certificate from the internal CA.
    cat >> "$conf" <<CONF
port 0
tls-port $REDIS_PORT
tls-cert-file $REDIS_TLS_DIR/tls.crt
tls-key-file $REDIS_TLS_DIR/tls.key
tls-ca-cert-file $REDIS_TLS_DIR/ca.crt
tls-auth-clients yes
tls-protocols "TLSv1.3"
CONF
else
    echo "port $REDIS_PORT" >> "$conf"
fi
exec redis-server "$conf"
