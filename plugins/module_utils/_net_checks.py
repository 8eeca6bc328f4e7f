# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure network checks for the validate_host module: DNS with fallback, endpoints, bandwidth.

Resolvers are passed in as callables, so the fallback order is unit-tested with fakes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.gekko.platform.plugins.module_utils._host_checks import fail, ok, warn

SYSTEM_RESOLVER = "system resolver"


def split_host_port(text, default_port=None):
    """'db:5432' -> ('db', 5432); '[::1]:80' -> ('::1', 80); a bare host takes default_port."""
    text = text.strip()
    if text.startswith("["):
        host, dummy, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, dummy, port = text.partition(":")
        return host, int(port)
    return text, default_port


def resolve_with_fallback(name, resolvers):
    """Ask each (label, resolve) in turn until one returns addresses.

    resolve(name) returns a list of addresses or raises. Returns {'addresses', 'answered_by',
    'errors': [(label, error text)]}; answered_by is None when every resolver failed.
    """
    errors = []
    for label, resolve in resolvers:
        try:
            addresses = resolve(name)
        except Exception as exc:  # any resolver error means: try the next one
            errors.append((label, str(exc) or type(exc).__name__))
            continue
        if addresses:
            return {"addresses": sorted(set(addresses)), "answered_by": label, "errors": errors}
        errors.append((label, "no addresses"))
    return {"addresses": [], "answered_by": None, "errors": errors}


def check_dns(name, resolution):
    """ok from the first resolver, a warning when only a fallback answered, else a failure."""
    check = "dns:%s" % name
    tried = "; ".join("%s: %s" % (label, error) for label, error in resolution["errors"])
    if resolution["answered_by"] is None:
        return fail(
            check,
            "%s does not resolve (%s)" % (name, tried or "no resolver configured"),
            "Check the name, /etc/resolv.conf and gekko_validation_dns_servers, or add working "
            "servers to gekko_validation_dns_fallback_servers",
        )
    addresses = ", ".join(resolution["addresses"])
    if not resolution["errors"]:
        return ok(check, "%s -> %s (%s)" % (name, addresses, resolution["answered_by"]))
    return warn(
        check,
        "%s -> %s only through fallback %s (%s)"
        % (name, addresses, resolution["answered_by"], tried),
        "Repair the primary resolver (/etc/resolv.conf or gekko_validation_dns_servers): the "
        "platform's own lookups do not use the fallback servers",
    )


def check_dns_library(missing, servers):
    """Named DNS servers need dnspython on the host; without it only the system resolver runs."""
    if not missing:
        return []
    return [
        warn(
            "dns_library",
            "dnspython is not installed on the host: DNS servers %s were not asked, only the "
            "system resolver" % ", ".join(servers),
            "Install dnspython for the host's ansible_python_interpreter "
            "(apt-get install python3-dnspython, or pip install dnspython)",
        )
    ]


def check_endpoint(target, status, error):
    """status: the HTTP status for a URL (None for host:port); error: why it was not reached."""
    check = "endpoint:%s" % target
    if error is not None:
        return fail(
            check,
            "%s is not reachable: %s" % (target, error),
            "Check that the service at %s runs, that the name resolves, and that firewalls "
            "and proxies let this host through" % target,
        )
    if status is None:
        return ok(check, "%s accepts connections" % target)
    if status >= 500:
        return fail(
            check,
            "%s answered HTTP %d" % (target, status),
            "The endpoint is reachable but failing: check the service behind %s" % target,
        )
    return ok(check, "%s answered HTTP %d" % (target, status))


def mbit_per_second(byte_count, seconds):
    """Throughput in Mbit/s (10**6 bits), as network links are rated."""
    if seconds <= 0:
        return float("inf")
    return byte_count * 8 / seconds / 1e6


def check_bandwidth(url, byte_count, seconds, minimum_mbit, error):
    if error is not None:
        return fail(
            "bandwidth",
            "the bandwidth probe %s failed: %s" % (url, error),
            "Make %s reachable from the host or set gekko_validation_bandwidth_url to a file "
            "the host can download" % url,
        )
    rate = mbit_per_second(byte_count, seconds)
    measured = "%.1f Mbit/s (%d bytes in %.3f s from %s)" % (rate, byte_count, seconds, url)
    if rate >= minimum_mbit:
        return ok("bandwidth", "%s, >= %s Mbit/s" % (measured, minimum_mbit))
    return fail(
        "bandwidth",
        "%s, %s Mbit/s required" % (measured, minimum_mbit),
        "Move the host to a faster link or check for saturation (market data needs "
        "%s Mbit/s); lower gekko_validation_min_bandwidth_mbit only for test environments"
        % minimum_mbit,
    )
