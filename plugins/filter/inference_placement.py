# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: inference_placement
short_description: Where the inference containers run, from the gpu_facts facts
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Takes C(ansible_facts.gekko_gpu) from M(gekko.platform.gpu_facts) and returns the placement
    the C(signals) service's catalogue entry reads, C(gekko_inference_placement).
  - With a usable CUDA backend and the NVIDIA Container Toolkit on the host, one instance per GPU,
    each given its own GPU (C(gpu_per_instance)). Otherwise C(cpu) with O(cpu_instances)
    instances; Apple MPS stays C(cpu) because Docker containers cannot reach Metal.
options:
  _input:
    description: The gekko_gpu facts.
    type: dict
    required: true
  cpu_instances:
    description: Instances when the containers get no GPU.
    type: int
    default: 1
  memory_fraction:
    description: Share of each GPU's memory the service may use.
    type: float
    default: 0.8
"""

EXAMPLES = r"""
- name: Place the inference service
  ansible.builtin.set_fact:
    gekko_inference_placement: "{{ ansible_facts.gekko_gpu | gekko.platform.inference_placement(cpu_instances=2) }}"
"""

RETURN = r"""
_value:
  description:
    - C(device) (cuda or cpu), C(instances), C(gpu_per_instance) and C(env) with
      C(GEKKO_INFERENCE_DEVICE), C(GEKKO_GPU_MEMORY_FRACTION) and C(GEKKO_GPU_METRICS) (strings).
  type: dict
"""

from ansible.errors import AnsibleFilterError


def containers_get_gpus(facts):
    """CUDA reaches a container only through the NVIDIA Container Toolkit's runtime hook."""
    return (
        facts.get("backend") == "cuda"
        and bool(facts.get("devices"))
        and bool(facts.get("container_toolkit"))
    )


def inference_placement(facts, cpu_instances=1, memory_fraction=0.8):
    if not isinstance(facts, dict) or "backend" not in facts:
        raise AnsibleFilterError("inference_placement expects the gekko_gpu facts of gpu_facts")
    fraction = float(memory_fraction)
    if not 0 < fraction <= 1:
        raise AnsibleFilterError("memory_fraction must be in (0, 1], got %s" % memory_fraction)
    gpu = containers_get_gpus(facts)
    device = "cuda" if gpu else "cpu"
    return {
        "device": device,
        "instances": len(facts["devices"]) if gpu else int(cpu_instances),
        "gpu_per_instance": gpu,
        "env": {
            "GEKKO_INFERENCE_DEVICE": device,
            "GEKKO_GPU_MEMORY_FRACTION": str(fraction),
            "GEKKO_GPU_METRICS": "true" if gpu else "false",
        },
    }


class FilterModule(object):
    def filters(self):
        return {"inference_placement": inference_placement}
