#!/bin/sh
# The log store's container: rsyslogd, and beside it logrotate at start and every
# GEKKO_LOGROTATE_INTERVAL seconds (no cron in the container). The container ends when rsyslogd
# does, so Docker's restart policy brings both back.
set -u
conf_dir=${GEKKO_LOG_STORE_CONF_DIR:-/etc/gekko/log-store}
pidfile=${GEKKO_LOG_STORE_PIDFILE:-/tmp/rsyslogd.pid}
state=${GEKKO_LOGROTATE_STATE:-/var/log/gekko/.logrotate.status}
interval=${GEKKO_LOGROTATE_INTERVAL:-3600}

rsyslogd -n -f "$conf_dir/rsyslog.conf" -i "$pidfile" &
rsyslog=$!
(
    sleeper=
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    while :; do
        logrotate --state "$state" "$conf_dir/logrotate.conf" \
            || echo "log-store: logrotate failed with status $?" >&2
        sleep "$interval" &
        sleeper=$!
        wait "$sleeper"
    done
) &
rotator=$!

# docker stop sends SIGTERM (through the init process): rsyslogd writes what it holds and ends.
trap 'kill -TERM "$rsyslog" 2>/dev/null' TERM INT
wait "$rsyslog"
status=$?
# A trapped signal ends the first wait early; the second waits for rsyslogd itself.
if kill -0 "$rsyslog" 2>/dev/null; then
    wait "$rsyslog"
    status=$?
fi
kill "$rotator" 2>/dev/null
exit "$status"
