# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure software checks for the validate_host module: platform, Docker, datastores, packages.

Like _host_checks, each rule takes data already read from the host (os-release text, the
engine's version answer, a probe's first bytes, dpkg-query output) and returns report lines.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import shlex

from ansible_collections.gekko.platform.plugins.module_utils._host_checks import (
    fail,
    ok,
    skip,
    version_tuple,
    warn,
)


def parse_os_release(text):
    """/etc/os-release as a dict (KEY=value lines, values shell-quoted)."""
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, dummy, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value]
        fields[key] = words[0] if words else ""
    return fields


def describe_os(system, os_release, mac_version):
    """The OS as facts: {'system', 'distribution', 'version', 'pretty_name'}."""
    if system == "Darwin":
        return {
            "system": system,
            "distribution": "macos",
            "version": mac_version,
            "pretty_name": "macOS %s" % mac_version,
        }
    return {
        "system": system,
        "distribution": os_release.get("ID", "unknown"),
        "version": os_release.get("VERSION_ID", ""),
        "pretty_name": os_release.get("PRETTY_NAME", system),
    }


def check_os(os_facts, min_versions):
    """Linux or macOS 12+; a listed distribution must meet its minimum version.

    min_versions: distribution id -> lowest version ({'debian': '12', 'macos': '12'}).
    A Linux distribution that is not listed may work but was not tested: a warning.
    """
    system, distribution = os_facts["system"], os_facts["distribution"]
    version, pretty = os_facts["version"], os_facts["pretty_name"]
    if system not in ("Linux", "Darwin"):
        return fail(
            "os",
            "%s is not supported" % pretty,
            "Deploy to a Linux host (Debian 12 is tested) or macOS 12 or newer",
        )
    minimum = min_versions.get(distribution)
    if minimum is None:
        if system == "Darwin":
            minimum = "12"
        else:
            return warn(
                "os",
                "%s is not one of the tested distributions (%s)"
                % (pretty, ", ".join(sorted(min_versions))),
                "Use a tested distribution, or add '%s' to gekko_validation_os_min_versions "
                "once the deploy has been tried on it" % distribution,
            )
    if version_tuple(version) >= version_tuple(minimum):
        return ok("os", "%s (>= %s %s)" % (pretty, distribution, minimum))
    return fail(
        "os",
        "%s is older than the supported %s %s" % (pretty, distribution, minimum),
        "Upgrade the host to %s %s or newer" % (distribution, minimum),
    )


def check_docker(answer, requirement, min_version):
    """The engine's /version answer (a dict) or the error text when it did not answer.

    requirement: 'required' (must answer now), 'optional' (the deploy installs it, so no answer
    is a warning), 'skip'. An engine that answers but is too old fails either way: installing
    the package does not upgrade it.
    """
    if requirement == "skip":
        return skip("docker", "Docker engine not checked (docker_required=skip)")
    if not isinstance(answer, dict):
        message = "the Docker engine does not answer: %s" % answer
        if requirement == "optional":
            return warn(
                "docker",
                message + " (the deploy installs and starts it)",
                "Nothing, if the docker_engine role runs in this deploy; else install the "
                "engine (apt-get install docker.io) and start it",
            )
        return fail(
            "docker",
            message,
            "Install the engine (apt-get install docker.io), start it (systemctl start docker) "
            "and check that this user may use its socket",
        )
    version = answer.get("Version", "unknown")
    api = answer.get("ApiVersion", "unknown")
    if version_tuple(version) >= version_tuple(min_version):
        return ok("docker", "Docker engine %s (API %s, >= %s)" % (version, api, min_version))
    return fail(
        "docker",
        "Docker engine %s is older than the required %s" % (version, min_version),
        "Upgrade the engine to %s or newer (apt-get install --only-upgrade docker.io)"
        % min_version,
    )


def postgres_answer(first_byte):
    """What a PostgreSQL server says to an SSLRequest: 'S' or 'N' (or 'E' from old ones)."""
    return first_byte in (b"S", b"N", b"E")


def redis_answer(reply):
    """What a Redis server says to PING: +PONG, or an auth error when it has a password."""
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-ERR operation not permitted", b"-WRONGPASS"))


def check_datastore(kind, endpoint, reply, error):
    """kind: 'postgres' | 'redis'; reply: the server's first bytes; error: why there were none."""
    name = "%s:%s" % (kind, endpoint)
    label = {"postgres": "PostgreSQL", "redis": "Redis"}[kind]
    recognise = {"postgres": postgres_answer, "redis": redis_answer}[kind]
    if error is None and recognise(reply):
        return ok(name, "%s answers at %s" % (label, endpoint))
    if error is None:
        message = "%s at %s answered %r, which is not %s" % (kind, endpoint, reply[:40], label)
        fix = "Point the %s endpoint at a %s server; another service holds %s" % (
            kind,
            label,
            endpoint,
        )
    else:
        message = "%s is not reachable at %s: %s" % (label, endpoint, error)
        fix = (
            "Start %s or correct the endpoint (gekko_validation_%s_endpoint), and allow the "
            "host through any firewall between them" % (label, kind)
        )
    return fail(name, message, fix)


def parse_dpkg_status(output):
    """dpkg-query -W -f='${Package}\\t${db:Status-Status}\\t${Version}\\n' -> {pkg: version}.

    Only installed packages are returned; removed ones keep a 'config-files' status.
    """
    installed = {}
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1] == "installed":
            installed[fields[0]] = fields[2]
    return installed


def check_packages(wanted, installed):
    """installed: {package: version}, or None where there is no dpkg (not Debian)."""
    if installed is None:
        return [
            skip(
                "package:%s" % name,
                "%s not checked: the host has no dpkg-query (not a Debian system)" % name,
                "Check by hand that %s is installed" % name,
            )
            for name in wanted
        ]
    return [
        ok("package:%s" % name, "%s %s is installed" % (name, installed[name]))
        if name in installed
        else fail(
            "package:%s" % name,
            "required package %s is not installed" % name,
            "apt-get install %s" % name,
        )
        for name in wanted
    ]
