# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: service_order
short_description: Order a service catalogue by its dependencies
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Takes a list of services, each a dict with C(name) and an optional C(depends_on) list of
    service names, and returns the services in an order where every service comes after all of
    its dependencies. Services with no order between them keep their catalogue order.
  - Fails with a message that names the services when a dependency is unknown or the
    dependencies form a cycle.
  - The companion filter C(gekko.platform.service_waves) returns the same order as a list of
    waves; the services of one wave depend only on earlier waves and can start together.
    C(gekko.platform.service_wave_map) returns each service's wave index by name.
options:
  _input:
    description: The service catalogue.
    type: list
    elements: dict
    required: true
  external:
    description: Names that services may depend on without being in the catalogue (for example
      C(postgres) and C(redis), started by their own role).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Start services in dependency order
  ansible.builtin.debug:
    msg: "{{ gekko_catalogue | gekko.platform.service_order(external=['postgres', 'redis'])
             | map(attribute='name') | list }}"
"""

RETURN = r"""
_value:
  description: The services in start order (service_order) or grouped in waves (service_waves).
  type: list
"""

from graphlib import CycleError, TopologicalSorter

from ansible.errors import AnsibleFilterError


def _graph(services, external):
    if not isinstance(services, list):
        raise AnsibleFilterError(
            "service_order expects a list of services, got %s" % type(services).__name__
        )
    by_name = {}
    for position, service in enumerate(services):
        if not isinstance(service, dict) or not service.get("name"):
            raise AnsibleFilterError("service #%d has no name: %r" % (position + 1, service))
        if service["name"] in by_name:
            raise AnsibleFilterError("service %s is declared twice" % service["name"])
        by_name[service["name"]] = service
    known = set(by_name) | set(external or [])
    graph = {}
    for name, service in by_name.items():
        depends = service.get("depends_on") or []
        unknown = sorted(set(depends) - known)
        if unknown:
            raise AnsibleFilterError(
                "service %s depends on unknown service(s) %s; declare them in the catalogue or "
                "fix depends_on" % (name, ", ".join(unknown))
            )
        graph[name] = [d for d in depends if d in by_name]
    return by_name, graph


def service_waves(services, external=None):
    by_name, graph = _graph(services, external)
    position = {name: index for index, name in enumerate(by_name)}
    sorter = TopologicalSorter(graph)
    try:
        sorter.prepare()
    except CycleError as exc:
        cycle = exc.args[1]
        raise AnsibleFilterError(
            "dependency cycle between services: %s" % " -> ".join(cycle)
        ) from exc
    waves = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.get)
        waves.append([by_name[name] for name in ready])
        sorter.done(*ready)
    return waves


def service_order(services, external=None):
    return [service for wave in service_waves(services, external) for service in wave]


def service_wave_map(services, external=None):
    """{service name: wave index}, for tagging containers with their start wave."""
    return dict(
        (service["name"], index)
        for index, wave in enumerate(service_waves(services, external))
        for service in wave
    )


class FilterModule(object):
    def filters(self):
        return {
            "service_order": service_order,
            "service_waves": service_waves,
            "service_wave_map": service_wave_map,
        }
