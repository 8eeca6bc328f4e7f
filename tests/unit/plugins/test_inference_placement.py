"""Where the signals containers run, from the gekko_gpu facts (the gpu role's contract)."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.gekko.platform.plugins.filter.inference_placement import (
    inference_placement,
)

HOOK = "/usr/bin/nvidia-container-runtime-hook"
TWO_GPUS = [{"index": 0, "name": "NVIDIA L4"}, {"index": 1, "name": "NVIDIA L4"}]


def facts(backend, devices=(), toolkit=HOOK):
    return {"backend": backend, "devices": list(devices), "container_toolkit": toolkit}


def test_cuda_runs_one_instance_per_gpu_with_metrics():
    placement = inference_placement(facts("cuda", TWO_GPUS), cpu_instances=3, memory_fraction=0.7)
    assert placement == {
        "device": "cuda",
        "instances": 2,
        "gpu_per_instance": True,
        "env": {
            "GEKKO_INFERENCE_DEVICE": "cuda",
            "GEKKO_GPU_MEMORY_FRACTION": "0.7",
            "GEKKO_GPU_METRICS": "true",
        },
    }


def test_cpu_uses_the_configured_instances_without_gpu_metrics():
    placement = inference_placement(facts("cpu", toolkit=None), cpu_instances=3)
    assert placement["device"] == "cpu" and placement["instances"] == 3
    assert placement["gpu_per_instance"] is False
    assert placement["env"] == {
        "GEKKO_INFERENCE_DEVICE": "cpu",
        "GEKKO_GPU_MEMORY_FRACTION": "0.8",
        "GEKKO_GPU_METRICS": "false",
    }


def test_mps_stays_cpu_for_containers():
    placement = inference_placement(facts("mps", [{"index": 0, "name": "Apple MPS"}], None))
    assert placement["device"] == "cpu" and placement["instances"] == 1


def test_cuda_without_the_container_toolkit_stays_cpu():
    placement = inference_placement(facts("cuda", TWO_GPUS, toolkit=None))
    assert placement["device"] == "cpu" and not placement["gpu_per_instance"]


def test_gpus_found_but_unusable_stay_cpu():
    # gpu_facts lists GPUs it fell back from (e.g. driver too old) with backend cpu.
    assert inference_placement(facts("cpu", TWO_GPUS))["device"] == "cpu"


@pytest.mark.parametrize("fraction", [0, 1.5])
def test_memory_fraction_out_of_range_is_refused(fraction):
    with pytest.raises(AnsibleFilterError, match="memory_fraction"):
        inference_placement(facts("cpu"), memory_fraction=fraction)


def test_input_that_is_not_the_gpu_facts_is_refused():
    with pytest.raises(AnsibleFilterError, match="gekko_gpu facts"):
        inference_placement({"devices": []})
