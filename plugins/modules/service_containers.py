#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: service_containers
short_description: Reconcile a host's whole set of service containers in one call
version_added: 0.1.0
description:
  - Makes the managed containers on a Docker host match O(containers), in dependency waves,
    with the deployment strategy each container asks for, and waits until every changed
    container is healthy.
  - A container whose spec (image id, command, environment including O(containers[].env_files),
    limits, hardening, health check) is unchanged is left alone, so a redeploy reports no change.
  - C(rolling) replaces instances in place, one instance per service at a time; the old instance
    is drained first and kept stopped until the new one is healthy, and restored if it is not.
  - C(blue_green) starts the new version in the other slot (name suffix C(-green), the
    alternate port), waits until it is healthy, then drains and removes the old slot.
  - C(canary) replaces the first instance, judges its server error rate (errors over requests
    served) over everything it served from its start until O(canary.window_seconds) after it
    became healthy, and only then rolls the other instances; over O(canary.max_error_rate), or
    with fewer than O(canary.min_requests) requests, the canary is rolled back and the module
    fails.
  - Draining sends O(drain_signal) (the Gekko services leave discovery and fail their health
    check on it) and waits O(drain_seconds) before stopping, so no request is cut off.
  - With O(prune=true), managed containers matching O(selector) that are not in the set are
    drained and removed (scale down, removed services).
author:
  - Gekko platform team (@gekko-platform)
requirements:
  - Docker SDK for Python (C(docker)) on the managed host (Debian package python3-docker)
attributes:
  check_mode:
    support: full
    description: Reports the plan (create, replace, switch, prune) without touching containers.
  diff_mode:
    support: full
    description: Shows each container's spec hash before and after.
options:
  containers:
    description: The containers that should run, in any order.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Container name (the blue slot's name for blue-green).
        type: str
        required: true
      service:
        description: The service this container is an instance of.
        type: str
        required: true
      image:
        description: Image reference; it must already exist on the host.
        type: str
        required: true
      command:
        description: Command (arguments to the image's entrypoint).
        type: list
        elements: str
        default: []
      env:
        description: Environment; values may contain C({port}), replaced by the slot's port.
        type: dict
        default: {}
      env_files:
        description: Files on the host with KEY=VALUE lines, read before O(containers[].env).
        type: list
        elements: path
        default: []
      labels:
        description: Extra labels.
        type: dict
        default: {}
      memory:
        description: Memory limit, e.g. C(512m).
        type: str
      cpus:
        description: CPU limit in cores.
        type: float
      user:
        description: User to run as.
        type: str
      read_only:
        description: Read-only root file system.
        type: bool
        default: true
      tmpfs:
        description: Paths mounted as tmpfs.
        type: list
        elements: str
        default: [/tmp]
      cap_drop:
        description: Capabilities to drop.
        type: list
        elements: str
        default: [ALL]
      security_opts:
        description: Security options.
        type: list
        elements: str
        default: [no-new-privileges]
      init:
        description: Run an init process that reaps zombies and forwards signals.
        type: bool
        default: true
      healthcheck:
        description: Health check with C(test) (list), C(interval), C(timeout), C(start_period)
          (seconds) and C(retries). A C(start_period) of 0 means none; left out, the image's.
        type: dict
      restart_policy:
        description: Restart policy.
        type: str
        default: unless-stopped
        choices: ['no', on-failure, always, unless-stopped]
      network_mode:
        description: Network mode; the platform uses host networking.
        type: str
        default: host
      port:
        description: The port the container listens on (used for C({port}) and canary metrics).
        type: int
      alternate_port:
        description: The port of the second slot, for C(blue_green).
        type: int
      strategy:
        description: How a changed container is rolled out.
        type: str
        default: rolling
        choices: [rolling, blue_green, canary]
      wave:
        description: Start order; lower waves are started and healthy before higher ones.
        type: int
        default: 0
      metrics_url:
        description: Where the canary's Prometheus metrics are read, may contain C({port}).
        type: str
      mounts:
        description:
          - Host folders bind-mounted into the container, e.g. its TLS certificates.
          - Part of the spec; an empty or missing list leaves the spec hash as it was before this
            option existed.
        type: list
        elements: dict
        suboptions:
          source:
            description: Path on the host.
            type: path
            required: true
          target:
            description: Path in the container.
            type: path
            required: true
          read_only:
            description: Mount read-only.
            type: bool
            default: true
      group_add:
        description:
          - Extra groups (names or ids) for the container's user, e.g. the Docker socket's group
            for a read-only exporter.
          - Part of the spec; an empty or missing list leaves the spec hash as it was before this
            option existed.
        type: list
        elements: str
      log:
        description:
          - The container's log driver and its options (C(docker run --log-driver --log-opt)),
            e.g. Docker's C(syslog) driver to the host's log relay; without it the engine's
            default driver (C(log-driver) in C(daemon.json)).
          - Part of the spec, so changing it recreates the container; a missing O(containers[].log)
            leaves the spec hash as it was before this option existed.
        type: dict
        suboptions:
          driver:
            description: Log driver, e.g. C(syslog), C(local) or C(json-file).
            type: str
            required: true
          options:
            description:
              - The driver's options (C(--log-opt)), e.g. C(syslog-address), C(syslog-format),
                C(tag); values are passed to Docker as strings (booleans as C(true)/C(false)).
            type: dict
            default: {}
      device_requests:
        description:
          - GPUs for the container, passed to Docker as device requests (C(docker run --gpus)).
            The NVIDIA driver needs the NVIDIA Container Toolkit on the host.
          - Part of the spec, so changing the GPUs recreates the container; an empty or missing
            list leaves the spec hash as it was before this option existed.
        type: list
        elements: dict
        suboptions:
          driver:
            description: Device driver, e.g. C(nvidia).
            type: str
          count:
            description: Number of devices, C(-1) for all. Not together with O(containers[].device_requests[].device_ids).
            type: int
          device_ids:
            description: Device indexes or UUIDs, e.g. C(["0"]).
            type: list
            elements: str
          capabilities:
            description: Capability sets, any of which the driver must satisfy, e.g. C([[gpu]]).
            type: list
            elements: list
          options:
            description: Driver-specific options.
            type: dict
  selector:
    description: Labels that identify the set this call owns, for O(prune).
    type: dict
    default: {}
  prune:
    description: Drain and remove managed containers that match O(selector) but are not wanted.
    type: bool
    default: false
  drain_signal:
    description: Signal sent to a container before it is stopped; empty to skip draining.
    type: str
    default: SIGUSR1
  drain_seconds:
    description: Seconds between the drain signal and the stop.
    type: float
    default: 3
  in_waves:
    description:
      - Start the changing containers wave by wave, dependencies first (O(containers[].wave)).
      - A rollback sets C(false). Every container it restores ran together before, so they all
        start in one round and the release is back one health wait sooner.
    type: bool
    default: true
  canary_analysis:
    description:
      - Judge the first new instance of a C(canary) service on its error rate before the others.
      - A rollback sets C(false). The release it restores has served already.
    type: bool
    default: true
  stop_timeout:
    description: Seconds a container gets to exit after SIGTERM.
    type: int
    default: 10
  health_timeout:
    description: Seconds a changed container may take to become healthy.
    type: int
    default: 90
  memory_floor_mb:
    description:
      - Memory (MemAvailable of /proc/meminfo, in MiB) the host keeps free while containers start
        (EC-HW-002). Before each round the host's available memory is read; a round whose new
        containers would take it under this floor is narrowed to those that fit, and while none
        fits the rollout pauses (O(memory_wait_seconds)), then fails naming what it found.
      - A replaced container is stopped before its successor starts and so needs none. C(0)
        turns the check off; hosts without /proc/meminfo are not checked.
    type: int
    default: 256
  memory_per_container_mb:
    description: Memory a starting container is expected to take, in MiB.
    type: int
    default: 128
  memory_wait_seconds:
    description: Seconds a rollout pauses for memory to free up before it fails.
    type: float
    default: 60
  canary:
    description: Canary analysis settings.
    type: dict
    default: {}
    suboptions:
      window_seconds:
        description: How long the canary is watched after it became healthy.
        type: float
        default: 30
      max_error_rate:
        description: Highest accepted share of 5xx responses.
        type: float
        default: 0.05
      min_requests:
        description:
          - The fewest requests a canary must serve to be promoted. The error rate is errors over
            the requests actually served; a canary over O(canary.max_error_rate) fails on any
            sample, one under it with fewer requests is watched up to one more window and fails
            if the sample is still too small.
        type: int
        default: 20
      ca_file:
        description: CA certificate that verifies an C(https) O(containers[].metrics_url).
        type: path
      client_cert:
        description:
          - Certificate the module presents to an C(https) O(containers[].metrics_url), since
            services that serve TLS admit only clients with a certificate from the internal CA.
        type: path
      client_key:
        description: Private key of O(canary.client_cert).
        type: path
  restart:
    description:
      - Containers of the set to restart (drained first), one at a time, each waited on until
        healthy, whether or not their spec changed.
    type: list
    elements: str
    default: []
  docker_host:
    description: The Docker API endpoint.
    type: str
    default: unix:///var/run/docker.sock
"""

EXAMPLES = r"""
- name: Run the domain services
  gekko.platform.service_containers:
    selector: {gekko.platform/set: services}
    prune: true
    containers:
      - name: gekko-trading
        service: trading
        image: gekko/app:1f95cdf6074e
        command: [serve, trading]
        env_files: [/etc/gekko/app.env]
        env: {GEKKO_PORT: "{port}"}
        port: 8102
        memory: 512m
        healthcheck: {test: [CMD, gekko-healthcheck], interval: 2, timeout: 2, retries: 3}
        labels: {gekko.platform/set: services}
      - name: gekko-signals
        service: signals
        image: gekko/app:1f95cdf6074e
        port: 8107
        env: {GEKKO_PORT: "{port}", GEKKO_INFERENCE_DEVICE: cuda}
        device_requests:
          - {driver: nvidia, device_ids: ["0"], capabilities: [[gpu]]}
        # Lines to the host's log relay; the tag is Docker's template, not Jinja.
        log:
          driver: syslog
          options:
            syslog-address: udp://127.0.0.1:5514
            syslog-format: rfc5424micro
            tag: !unsafe "{{.Name}}"
        labels: {gekko.platform/set: services}
"""

RETURN = r"""
actions:
  description: What happened to each container, in order.
  returned: always
  type: list
  elements: dict
  sample:
    - {container: gekko-trading, service: trading, action: replace, seconds: 4.2}
containers:
  description:
    - Name, service, slot port, spec hash and Docker restart count of every wanted container
      after the run.
  returned: always
  type: list
  elements: dict
"""

import contextlib
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.urls import open_url
from ansible_collections.gekko.platform.plugins.module_utils import _container_plan as planning

DOCKER_IMPORT_ERROR = None
try:
    import docker
    from docker.errors import APIError, ImageNotFound, NotFound
except ImportError:
    DOCKER_IMPORT_ERROR = traceback.format_exc()

NANO = 1000000000


def start_period_ns(check):
    """The health check's start period for the engine, which reads a zero as "the image's" (20 s
    in the platform's images): an explicit 0 is sent as the shortest period it accepts (1 ms);
    none given (or null) inherits the image's."""
    if check.get("start_period") is None:
        return 0
    return max(int(float(check["start_period"]) * NANO), NANO // 1000)


class RolloutError(Exception):
    pass


def available_memory_mb(path="/proc/meminfo"):
    """MemAvailable in MiB, or None where the host has no /proc/meminfo."""
    try:
        with open(path) as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (IOError, OSError, ValueError):
        return None
    return None


class Reconciler(object):
    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.params = module.params
        self.actions = []

    # ---------------------------------------------------------------- specs

    def desired_specs(self):
        specs = []
        for raw in self.params["containers"]:
            spec = dict(raw)
            try:
                spec["image_id"] = self.client.images.get(spec["image"]).id
            except ImageNotFound:
                if not self.module.check_mode:
                    self.module.fail_json(
                        msg="image %s for container %s is not on the host. Fix: build or pull it first "
                        "(gekko.platform.app_image builds the application image)."
                        % (spec["image"], spec["name"])
                    )
                # A check run of a deploy that would build the image first: no id yet, and
                # every container of it would be replaced.
                spec["image_id"] = "missing:%s" % spec["image"]
            env = {}
            for path in spec["env_files"]:
                try:
                    with open(path) as handle:
                        env.update(planning.parse_env_file(handle.read()))
                except (IOError, OSError, ValueError) as exc:
                    self.module.fail_json(
                        msg="cannot read env file %s for %s: %s" % (path, spec["name"], exc)
                    )
            env.update(dict((k, str(v)) for k, v in spec["env"].items()))
            spec["env"] = env
            try:
                spec["device_requests"] = planning.device_requests(spec.get("device_requests"))
            except ValueError as exc:
                self.module.fail_json(msg="container %s: %s" % (spec["name"], exc))
            spec["log"] = planning.log_config(spec.get("log"))
            spec["hash"] = planning.spec_hash(spec)
            specs.append(spec)
        return specs

    def existing(self, desired):
        """Managed containers of this set, plus any container squatting a wanted name."""
        wanted = set(name for spec in desired for name, _port in planning.slots(spec))
        found = {}
        # Hosts may share an engine: a container another host removes meanwhile is no concern.
        for container in self.client.containers.list(all=True, ignore_removed=True):
            labels = container.labels or {}
            managed = labels.get(planning.MANAGED_LABEL) == "true" and all(
                labels.get(k) == str(v) for k, v in self.params["selector"].items()
            )
            if not managed and container.name not in wanted:
                continue
            found[container.name] = {
                # An unmanaged container under a wanted name has no spec: it gets replaced.
                "hash": labels.get(planning.SPEC_LABEL) if managed else None,
                "running": container.status == "running",
                "service": labels.get(planning.SERVICE_LABEL),
                "container": container,
            }
        return found

    # ---------------------------------------------------------------- docker actions

    def create(self, spec, name, port):
        env = planning.with_port(spec["env"], port)
        labels = dict(spec["labels"])
        labels.update(
            {
                planning.MANAGED_LABEL: "true",
                planning.SPEC_LABEL: spec["hash"],
                planning.SERVICE_LABEL: spec["service"],
                planning.SLOT_LABEL: str(port),
            }
        )
        labels.update(dict((k, str(v)) for k, v in self.params["selector"].items()))
        kwargs = dict(
            image=spec["image_id"],
            command=planning.with_port(spec["command"], port) or None,
            name=name,
            environment=["%s=%s" % item for item in sorted(env.items())],
            labels=labels,
            network_mode=spec["network_mode"],
            read_only=spec["read_only"],
            tmpfs=dict((path, "") for path in spec["tmpfs"]),
            cap_drop=spec["cap_drop"] or None,
            security_opt=spec["security_opts"] or None,
            init=spec["init"],
            restart_policy={"Name": spec["restart_policy"]}
            if spec["restart_policy"] != "no"
            else None,
            detach=True,
        )
        if spec.get("memory"):
            kwargs["mem_limit"] = spec["memory"]
        if spec.get("cpus"):
            kwargs["nano_cpus"] = int(spec["cpus"] * NANO)
        if spec.get("user"):
            kwargs["user"] = spec["user"]
        if spec["mounts"]:
            kwargs["mounts"] = [
                docker.types.Mount(
                    mount["target"], mount["source"], type="bind", read_only=mount["read_only"]
                )
                for mount in spec["mounts"]
            ]
        if spec.get("group_add"):
            kwargs["group_add"] = spec["group_add"]
        if spec.get("log"):
            kwargs["log_config"] = docker.types.LogConfig(
                type=spec["log"]["driver"], config=spec["log"]["options"]
            )
        if spec["device_requests"]:
            kwargs["device_requests"] = [
                docker.types.DeviceRequest(**request) for request in spec["device_requests"]
            ]
        check = spec.get("healthcheck")
        if check:
            kwargs["healthcheck"] = {
                "test": planning.with_port(check["test"], port),
                "interval": int(float(check.get("interval", 5)) * NANO),
                "timeout": int(float(check.get("timeout", 3)) * NANO),
                "retries": int(check.get("retries", 3)),
                "start_period": start_period_ns(check),
            }
        container = self.client.containers.create(**kwargs)
        try:
            container.start()
        except Exception:
            # Not handed back, so nothing else would remove it, and it holds the slot's name
            # that the replaced container gets back when the round is reverted. The start's
            # error is the one to report, whatever the removal says.
            with contextlib.suppress(Exception):
                self.remove(container)
            raise
        return container

    def drain_and_stop(self, containers):
        """Drain every running container at once, wait one drain window, then stop them all:
        the instances of a round leave discovery together instead of one window each."""
        signalled = False
        for container in containers:
            if self.params["drain_signal"] and container.status == "running":
                try:
                    container.kill(signal=self.params["drain_signal"])
                    signalled = True
                except APIError:
                    pass  # it exited on its own meanwhile
        if signalled:
            time.sleep(self.params["drain_seconds"])
        # All at once: each stop waits for its server's graceful shutdown, and a round (or a
        # rollback) would otherwise wait for them one after another.
        self.each(self.stop, containers)

    def stop(self, container):
        try:
            container.stop(timeout=self.params["stop_timeout"])
        except NotFound:
            pass  # already gone (a -previous copy left by an interrupted run, removed above)

    @staticmethod
    def each(action, containers):
        """Apply `action` to every container concurrently; the first error is raised."""
        containers = list(containers)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(containers)))) as pool:
            list(pool.map(action, containers))

    def remove(self, container):
        try:
            container.remove(force=True)
        except NotFound:
            pass

    def wait_healthy(self, containers):
        """Wait until every container is healthy (or running, without a health check)."""
        deadline = time.time() + self.params["health_timeout"]
        pending = list(containers)
        while pending:
            still = []
            for container in pending:
                container.reload()
                state = container.attrs["State"]
                health = (state.get("Health") or {}).get("Status")
                if state["Status"] in ("exited", "dead", "restarting"):
                    raise RolloutError(
                        "%s exited with code %s: %s"
                        % (container.name, state.get("ExitCode"), self.logs(container))
                    )
                if health == "unhealthy":
                    raise RolloutError(
                        "%s is unhealthy: %s; last log lines: %s"
                        % (container.name, self.health_log(state), self.logs(container))
                    )
                if health not in (None, "healthy") or state["Status"] != "running":
                    still.append(container)
            pending = still
            if pending and time.time() > deadline:
                raise RolloutError(
                    "%s not healthy after %ss: %s"
                    % (
                        ", ".join(c.name for c in pending),
                        self.params["health_timeout"],
                        "; ".join(self.health_log(c.attrs["State"]) for c in pending),
                    )
                )
            if pending:
                time.sleep(0.5)

    @staticmethod
    def logs(container):
        try:
            return container.logs(tail=15).decode("utf-8", "replace").strip()[-1500:]
        except APIError:
            return "(no logs)"

    @staticmethod
    def health_log(state):
        entries = (state.get("Health") or {}).get("Log") or []
        return entries[-1]["Output"].strip()[-500:] if entries else "no health check result yet"

    # ---------------------------------------------------------------- strategies

    def record(self, step, started, action=None):
        self.actions.append(
            {
                "container": step["slot"][0],
                "service": step["spec"]["service"],
                "action": action or step["action"],
                "seconds": round(time.time() - started, 2),
            }
        )

    def memory_batch(self, steps):
        """The first steps of a round that the host's free memory allows to start now: all of
        them, fewer (narrowed), or, while none fits, after a pause for memory to free up."""
        floor = self.params["memory_floor_mb"]
        need = self.params["memory_per_container_mb"]
        if not floor:
            return steps
        deadline = time.time() + self.params["memory_wait_seconds"]
        paused = False
        while True:
            available = available_memory_mb()
            if available is None:
                return steps
            budget = available - floor
            batch = []
            for step in steps:
                cost = 0 if step["action"] == "replace" else need  # the old one stops first
                if cost > budget:
                    break
                budget -= cost
                batch.append(step)
            if batch:
                if len(batch) < len(steps):
                    self.module.warn(
                        "%d MiB of memory available and a %d MiB floor: starting %s first, then "
                        "the rest of the round (%d more)"
                        % (
                            available,
                            floor,
                            ", ".join(s["slot"][0] for s in batch),
                            len(steps) - len(batch),
                        )
                    )
                return batch
            if time.time() >= deadline:
                raise RolloutError(
                    "only %d MiB of memory is available on the host, under the %d MiB floor "
                    "plus %d MiB for %s, after waiting %d s; free memory (or move services to "
                    "another host), or lower gekko_deploy_memory_floor_mb"
                    % (
                        available,
                        floor,
                        need,
                        steps[0]["slot"][0],
                        self.params["memory_wait_seconds"],
                    )
                )
            if not paused:
                self.module.warn(
                    "%d MiB of memory available, under the %d MiB floor plus %d MiB for %s: "
                    "pausing the rollout for memory to free up"
                    % (available, floor, need, steps[0]["slot"][0])
                )
                paused = True
            time.sleep(2)

    def run_round(self, steps, existing):
        """Apply one round: stop what is replaced, start all new containers, wait for health.

        Returns the replaced containers, stopped but kept, and the new ones, so the caller can
        still revert (canary analysis) before removing the old ones.
        """
        started = time.time()
        previous = {}
        new = []
        replacing = [step for step in steps if step["action"] == "replace"]
        try:
            self.drain_and_stop([existing[step["old"]]["container"] for step in replacing])
            for step in replacing:
                name = step["slot"][0]
                old = existing[step["old"]]["container"]
                self.remove_by_name(name + "-previous")
                # Kept, stopped, until the new container proves healthy.
                old.rename(name + "-previous")
                previous[name] = old
            self.start_all(steps, existing, new)
            self.wait_healthy([c for _step, c in new])
        except Exception as exc:  # pylint: disable=broad-except
            # Whatever failed (the engine, its client timing out, a check), the round is
            # reverted: the replaced containers serve again.
            stopped = [
                existing[step["old"]]["container"]
                for step in replacing
                if step["slot"][0] not in previous
            ]
            self.restore(new, previous, stopped)
            raise RolloutError(
                "rollout of %s failed and was reverted: %s"
                % (", ".join(s["slot"][0] for s in steps), exc)
            ) from exc
        switched = [existing[s["old"]]["container"] for s, _c in new if s["action"] == "switch"]
        self.drain_and_stop(switched)
        for container in switched:
            self.remove(container)
        for step, _container in new:
            self.record(step, started)
        return previous, new

    def start_all(self, steps, existing, new):
        """Create and start the round's containers at once (each is a few engine calls, and a
        round of a dozen took over a second one by one). Every one that started is appended to
        `new`, so that a failed round removes it too; then the first error is raised."""

        def start(step):
            name, port = step["slot"]
            if step["action"] == "start":
                container = existing[name]["container"]
                container.start()
                return container
            return self.create(step["spec"], name, port)

        errors = []
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(steps)))) as pool:
            futures = [(step, pool.submit(start, step)) for step in steps]
            for step, future in futures:
                try:
                    new.append((step, future.result()))
                except Exception as exc:  # pylint: disable=broad-except
                    errors.append(exc)  # the engine's, or its client's (a timeout, a reset)
        if errors:
            raise errors[0]

    def restore(self, new, previous, stopped=()):
        """Remove the new containers and bring the replaced ones back (renamed ones, and any
        that were drained and stopped before the round failed)."""
        for step, container in new:
            if step["action"] != "start":
                self.remove(container)
        for name, old in previous.items():
            old.rename(name)
            old.start()
        # Drained (out of discovery) and maybe stopped: a restart brings either state back.
        self.each(lambda old: old.restart(timeout=self.params["stop_timeout"]), stopped)
        if previous:
            try:
                self.wait_healthy(list(previous.values()))
            except RolloutError:
                pass  # reported with the original failure

    def remove_by_name(self, name):
        try:
            self.remove(self.client.containers.get(name))
        except NotFound:
            pass

    def canary_check(self, step):
        spec = step["spec"]
        settings = self.params["canary"]
        url = planning.with_port(spec.get("metrics_url") or "", step["slot"][1])
        if not url:
            raise RolloutError("canary %s has no metrics_url" % spec["name"])
        # The canary is a new process, so its counters start at zero: everything it served
        # counts, including requests it failed before the gateway's breaker ejected it.
        time.sleep(settings["window_seconds"])
        # Too few requests to judge: keep watching, up to one more window.
        deadline = time.time() + settings["window_seconds"]
        while True:
            verdict, rate, requests = planning.canary_verdict(
                planning.request_counts(self.fetch(url)),
                settings["max_error_rate"],
                settings["min_requests"],
            )
            if verdict != planning.CANARY_TOO_FEW or time.time() >= deadline:
                break
            time.sleep(1)
        self.actions.append(
            {
                "container": step["slot"][0],
                "service": spec["service"],
                "action": "canary-analysis",
                "error_rate": round(rate, 4),
                "requests": requests,
                "verdict": verdict,
            }
        )
        if verdict == planning.CANARY_FAIL:
            raise RolloutError(
                "canary %s served %.1f%% server errors over %d requests (limit %.1f%%)"
                % (spec["name"], rate * 100, requests, settings["max_error_rate"] * 100)
            )
        if verdict == planning.CANARY_TOO_FEW:
            raise RolloutError(
                "canary %s received %d requests in %ss, fewer than the %d needed to judge it: "
                "nothing proves it works (is traffic reaching the service?)"
                % (spec["name"], requests, settings["window_seconds"] * 2, settings["min_requests"])
            )

    def fetch(self, url):
        try:
            return (
                open_url(
                    url,
                    timeout=5,
                    ca_path=self.params["canary"]["ca_file"],
                    client_cert=self.params["canary"]["client_cert"],
                    client_key=self.params["canary"]["client_key"],
                )
                .read()
                .decode("utf-8", "replace")
            )
        except Exception as exc:  # any failure to read the canary's metrics fails the canary
            raise RolloutError("cannot read canary metrics at %s: %s" % (url, exc)) from exc

    def restart_count(self, existing, name):
        """How often Docker restarted the container (a crash after start shows up here)."""
        if name in existing:
            return existing[name]["container"].attrs.get("RestartCount", 0)
        try:
            return self.client.containers.get(name).attrs.get("RestartCount", 0)
        except NotFound:
            return None

    def restarts(self, existing, steps):
        """Names to restart: they must be wanted containers that exist and are not being changed."""
        wanted = set(s["slot"][0] for s in steps if s["action"] == "unchanged")
        unknown = [n for n in self.params["restart"] if n not in wanted]
        if unknown:
            self.module.fail_json(
                msg="cannot restart %s: not a running, unchanged container of this set "
                "(known: %s)" % (", ".join(unknown), ", ".join(sorted(wanted)))
            )
        return list(self.params["restart"])

    # ---------------------------------------------------------------- main

    def run(self):
        desired = self.desired_specs()
        names = [s["name"] for s in desired]
        if len(set(names)) != len(names):
            self.module.fail_json(
                msg="container names must be unique: %s" % ", ".join(sorted(names))
            )
        existing = self.existing(desired)
        steps, prune = planning.plan(
            desired,
            dict(
                (k, dict(hash=v["hash"], running=v["running"], service=v["service"]))
                for k, v in existing.items()
            ),
        )
        if not self.params["prune"]:
            prune = []
        changes = [s for s in steps if s["action"] != "unchanged"]
        result = dict(
            changed=bool(changes or prune),
            actions=[
                {"container": s["slot"][0], "service": s["spec"]["service"], "action": s["action"]}
                for s in changes
            ]
            + [{"container": n, "action": "prune"} for n in prune],
            containers=[
                {
                    "name": s["slot"][0],
                    "service": s["spec"]["service"],
                    "port": s["slot"][1],
                    "hash": s["spec"]["hash"],
                    "restart_count": self.restart_count(existing, s["slot"][0]),
                }
                for s in steps
            ],
            diff=dict(
                before="".join("%s %s\n" % (n, existing[n]["hash"]) for n in sorted(existing)),
                after="".join("%s %s\n" % (s["slot"][0], s["spec"]["hash"]) for s in steps),
            ),
        )
        restarts = self.restarts(existing, steps)
        if restarts:
            result["changed"] = True
            result["actions"].extend({"container": n, "action": "restart"} for n in restarts)
        if self.module.check_mode or not result["changed"]:
            self.module.exit_json(**result)

        self.actions = []
        try:
            for _wave, index, steps_in_round in planning.rounds(steps, self.params["in_waves"]):
                pending = steps_in_round
                while pending:
                    batch = self.memory_batch(pending)
                    pending = pending[len(batch) :]
                    previous, new = self.run_round(batch, existing)
                    canaries = canary_steps(batch, index) if self.params["canary_analysis"] else []
                    try:
                        for step in canaries:
                            self.canary_check(step)
                    except RolloutError as exc:
                        self.restore(new, previous)
                        raise RolloutError("%s; the canary was rolled back" % exc) from exc
                    for old in previous.values():
                        self.remove(old)
            for name in restarts:
                started = time.time()
                container = existing[name]["container"]
                self.drain_and_stop([container])
                container.start()
                self.wait_healthy([container])
                self.actions.append(
                    {
                        "container": name,
                        "service": existing[name]["service"],
                        "action": "restart",
                        "seconds": round(time.time() - started, 2),
                    }
                )
            started = time.time()
            self.drain_and_stop([existing[name]["container"] for name in prune])
            for name in prune:
                self.remove(existing[name]["container"])
                self.actions.append(
                    {
                        "container": name,
                        "service": existing[name]["service"],
                        "action": "prune",
                        "seconds": round(time.time() - started, 2),
                    }
                )
        except RolloutError as exc:
            result["actions"] = self.actions
            self.module.fail_json(msg=str(exc), **result)
        result["actions"] = self.actions
        for item in result["containers"]:
            item["restart_count"] = self.restart_count({}, item["name"])
        self.module.exit_json(**result)


def canary_steps(steps_in_round, index):
    """The steps of a round whose new container is a canary to judge: the first replaced
    instance of each canary service."""
    if index != 0:
        return []
    return [
        s
        for s in steps_in_round
        if s["action"] == "replace" and s["spec"].get("strategy") == "canary"
    ]


def main():
    container_options = dict(
        name=dict(type="str", required=True),
        service=dict(type="str", required=True),
        image=dict(type="str", required=True),
        command=dict(type="list", elements="str", default=[]),
        env=dict(type="dict", default={}),
        env_files=dict(type="list", elements="path", default=[]),
        labels=dict(type="dict", default={}),
        memory=dict(type="str"),
        cpus=dict(type="float"),
        user=dict(type="str"),
        read_only=dict(type="bool", default=planning.HARDENING_DEFAULTS["read_only"]),
        tmpfs=dict(type="list", elements="str", default=["/tmp"]),
        cap_drop=dict(
            type="list", elements="str", default=list(planning.HARDENING_DEFAULTS["cap_drop"])
        ),
        security_opts=dict(
            type="list", elements="str", default=list(planning.HARDENING_DEFAULTS["security_opts"])
        ),
        init=dict(type="bool", default=True),
        healthcheck=dict(type="dict"),
        restart_policy=dict(
            type="str",
            default="unless-stopped",
            choices=["no", "on-failure", "always", "unless-stopped"],
        ),
        network_mode=dict(type="str", default="host"),
        port=dict(type="int"),
        alternate_port=dict(type="int"),
        strategy=dict(type="str", default="rolling", choices=["rolling", "blue_green", "canary"]),
        wave=dict(type="int", default=0),
        metrics_url=dict(type="str"),
        mounts=dict(
            type="list",
            elements="dict",
            options=dict(
                source=dict(type="path", required=True),
                target=dict(type="path", required=True),
                read_only=dict(type="bool", default=True),
            ),
        ),
        group_add=dict(type="list", elements="str"),
        log=dict(
            type="dict",
            options=dict(
                driver=dict(type="str", required=True),
                options=dict(type="dict", default={}),
            ),
        ),
        device_requests=dict(
            type="list",
            elements="dict",
            options=dict(
                driver=dict(type="str"),
                count=dict(type="int"),
                device_ids=dict(type="list", elements="str"),
                capabilities=dict(type="list", elements="list"),
                options=dict(type="dict"),
            ),
        ),
    )
    module = AnsibleModule(
        argument_spec=dict(
            containers=dict(type="list", elements="dict", required=True, options=container_options),
            selector=dict(type="dict", default={}),
            prune=dict(type="bool", default=False),
            drain_signal=dict(type="str", default="SIGUSR1"),
            drain_seconds=dict(type="float", default=3),
            in_waves=dict(type="bool", default=True),
            canary_analysis=dict(type="bool", default=True),
            stop_timeout=dict(type="int", default=10),
            health_timeout=dict(type="int", default=90),
            memory_floor_mb=dict(type="int", default=256),
            memory_per_container_mb=dict(type="int", default=128),
            memory_wait_seconds=dict(type="float", default=60),
            canary=dict(
                type="dict",
                default={},
                options=dict(
                    window_seconds=dict(type="float", default=30),
                    max_error_rate=dict(type="float", default=0.05),
                    min_requests=dict(type="int", default=20),
                    ca_file=dict(type="path"),
                    client_cert=dict(type="path"),
                    client_key=dict(type="path", no_log=False),
                ),
            ),
            restart=dict(type="list", elements="str", default=[]),
            docker_host=dict(type="str", default="unix:///var/run/docker.sock"),
        ),
        supports_check_mode=True,
    )
    if DOCKER_IMPORT_ERROR:
        module.fail_json(
            msg=missing_required_lib("docker") + " Fix: apt-get install python3-docker "
            "(or pip install docker) for the host's ansible_python_interpreter.",
            exception=DOCKER_IMPORT_ERROR,
        )
    for spec in module.params["containers"]:
        if spec["strategy"] == "blue_green" and not spec.get("alternate_port"):
            module.fail_json(
                msg="container %s uses blue_green but has no alternate_port" % spec["name"]
            )
    try:
        client = docker.DockerClient(base_url=module.params["docker_host"], timeout=120)
        client.ping()
    except Exception as exc:
        module.fail_json(
            msg="cannot reach the Docker engine at %s: %s. Fix: run the "
            "gekko.platform.docker_engine role." % (module.params["docker_host"], exc)
        )
    Reconciler(module, client).run()


if __name__ == "__main__":
    os.environ.setdefault("DOCKER_CONFIG", "/nonexistent")  # no credential helpers needed
    main()
