# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure planning for the service_containers module: specs, hashes, slots, rounds, error rates.

Nothing here talks to Docker, so the rules are unit-tested directly.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import re

MANAGED_LABEL = "gekko.platform/managed"
SPEC_LABEL = "gekko.platform/spec"
SERVICE_LABEL = "gekko.platform/service"
SLOT_LABEL = "gekko.platform/slot"
GREEN_SUFFIX = "-green"

# Fields of a container spec that define the running container (everything else is planning).
RUNTIME_FIELDS = (
    "image_id",
    "command",
    "env",
    "labels",
    "memory",
    "cpus",
    "user",
    "read_only",
    "tmpfs",
    "cap_drop",
    "security_opts",
    "init",
    "healthcheck",
    "restart_policy",
    "network_mode",
)
# The hardening service_containers gives a container whose spec leaves it out (its argument
# spec's defaults). The security policy gate (_security_policy) judges specs by the same values;
# the module has no option to run a container privileged or to add capabilities.
HARDENING_DEFAULTS = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opts": ["no-new-privileges"],
    "privileged": False,
    "cap_add": [],
}
# Runtime fields added later: hashed only when set, so containers that do not use them keep the
# hash they were created with and a deploy does not recreate them.
OPTIONAL_RUNTIME_FIELDS = ("device_requests", "mounts", "group_add", "log")
DEVICE_REQUEST_KEYS = ("driver", "count", "device_ids", "capabilities", "options")


def parse_env_file(text):
    """KEY=VALUE lines as Docker's --env-file reads them: no quoting, # comments."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError("not a KEY=VALUE line: %r" % line[:40])
        env[key.strip()] = value
    return env


def device_requests(requests):
    """GPU requests as DeviceRequest keyword arguments, without the keys left unset."""
    normalized = []
    for request in requests or []:
        kwargs = dict(
            (k, request[k]) for k in DEVICE_REQUEST_KEYS if request.get(k) not in (None, [], {})
        )
        if "count" in kwargs and "device_ids" in kwargs:
            raise ValueError("a device request sets either count or device_ids, not both")
        if "device_ids" in kwargs:
            kwargs["device_ids"] = [str(d) for d in kwargs["device_ids"]]
        normalized.append(kwargs)
    return normalized


def log_config(log):
    """The container's log driver as {"driver", "options"}, options as the strings Docker wants,
    or None for the engine's default driver."""
    if not log or not log.get("driver"):
        return None
    options = {}
    for key, value in (log.get("options") or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        options[str(key)] = str(value)
    return {"driver": log["driver"], "options": options}


def spec_hash(spec):
    """Identity of what a container runs; the slot port is applied after hashing."""
    runtime = dict((k, spec.get(k)) for k in RUNTIME_FIELDS)
    for key in OPTIONAL_RUNTIME_FIELDS:
        if spec.get(key):
            runtime[key] = spec[key]
    canonical = json.dumps(runtime, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def with_port(value, port):
    """Values may say {port}: blue-green slots run the same spec on two ports."""
    if isinstance(value, str):
        return value.replace("{port}", str(port))
    if isinstance(value, list):
        return [with_port(v, port) for v in value]
    if isinstance(value, dict):
        return dict((k, with_port(v, port)) for k, v in value.items())
    return value


def slots(spec):
    """(container name, port) pairs a spec may run in: one, or two for blue-green."""
    primary = (spec["name"], spec.get("port"))
    if spec.get("strategy") == "blue_green":
        return [primary, (spec["name"] + GREEN_SUFFIX, spec.get("alternate_port"))]
    return [primary]


def plan(desired, existing):
    """Decide an action per desired spec.

    desired: specs with name, service, strategy, wave and a computed `hash`.
    existing: {container name: {"hash", "running", "service"}} of managed containers.
    Returns (steps, prune): steps are dicts with spec, action (unchanged|start|create|replace|
    switch), slot (name, port) to run in and `old` (the container it replaces, or None).
    """
    steps = []
    claimed = set()
    for spec in desired:
        candidates = slots(spec)
        current = [(name, port) for name, port in candidates if name in existing]
        claimed.update(name for name, _port in candidates)
        same = [c for c in current if existing[c[0]]["hash"] == spec["hash"]]
        if same:
            name = same[0][0]
            action = "unchanged" if existing[name]["running"] else "start"
            # A leftover container of the other colour is stale: prune it below.
            claimed.difference_update(n for n, _port in current if n != name)
            steps.append(dict(spec=spec, action=action, slot=same[0], old=None))
        elif not current:
            steps.append(dict(spec=spec, action="create", slot=candidates[0], old=None))
        elif spec.get("strategy") == "blue_green":
            old = current[0]
            target = [c for c in candidates if c[0] != old[0]][0]
            steps.append(dict(spec=spec, action="switch", slot=target, old=old[0]))
        else:
            steps.append(
                dict(spec=spec, action="replace", slot=candidates[0], old=candidates[0][0])
            )
    prune = sorted(name for name in existing if name not in claimed)
    return steps, prune


def rounds(steps, in_waves=True):
    """Group changing steps by wave, then by instance position within their service.

    Waves run in order (dependencies first); within a wave, round k holds the k-th changing
    instance of every service, so services roll in parallel while each keeps the others of its
    instances serving (round 0 holds each canary service's first instance, judged before round 1).
    Without `in_waves` every service is in one wave (a rollback: they all ran together before).
    """
    by_wave = {}
    for step in steps:
        if step["action"] == "unchanged":
            continue
        wave = step["spec"].get("wave", 0) if in_waves else 0
        by_wave.setdefault(wave, []).append(step)
    ordered = []
    for wave in sorted(by_wave):
        position = {}
        wave_rounds = {}
        for step in by_wave[wave]:
            service = step["spec"]["service"]
            index = position.get(service, 0)
            position[service] = index + 1
            wave_rounds.setdefault(index, []).append(step)
        for index in sorted(wave_rounds):
            ordered.append((wave, index, wave_rounds[index]))
    return ordered


_SAMPLE = re.compile(r"^gekko_http_requests_total\{([^}]*)\}\s+([0-9.eE+-]+)\s*$")
_ROUTE = re.compile(r'route="([^"]*)"')
# Health checks, scrapes and the like are not user traffic.
_NOT_TRAFFIC = ("health", "metrics", "services", "openapi.json", "docs", "other")


def request_counts(metrics_text):
    """(total, server errors) from a service's gekko_http_requests_total samples."""
    total = errors = 0.0
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = match.group(1)
        route = _ROUTE.search(labels)
        if route and route.group(1) in _NOT_TRAFFIC:
            continue
        value = float(match.group(2))
        total += value
        if 'status_class="5xx"' in labels:
            errors += value
    return total, errors


def error_rate(before, after):
    """Error rate between two (total, errors) samples, with the request count it is based on."""
    requests = after[0] - before[0]
    errors = after[1] - before[1]
    if requests <= 0:
        return 0.0, 0
    return errors / requests, int(requests)


CANARY_PASS = "pass"
CANARY_FAIL = "fail"
CANARY_TOO_FEW = "too-few-requests"


def canary_verdict(counts, max_error_rate, min_requests):
    """(verdict, rate, requests) for a canary that served counts = (total, server errors).

    The rate is errors / requests served, nothing else. Over the limit the canary fails on any
    sample (errors already served cannot be outweighed by a promotion). Under it, the canary is
    promoted only after at least min_requests (and at least one): a small sample proves nothing.
    """
    rate, requests = error_rate((0.0, 0.0), counts)
    if requests and rate > max_error_rate:
        return CANARY_FAIL, rate, requests
    if requests < max(min_requests, 1):
        return CANARY_TOO_FEW, rate, requests
    return CANARY_PASS, rate, requests
