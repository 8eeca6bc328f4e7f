"""Rules of the validate_host module, over psutil-shaped data."""

from ansible.module_utils.common.text.formatters import human_to_bytes
from ansible_collections.gekko.platform.plugins.module_utils import _host_checks as checks

GIB = 1024**3
MIB = 1024**2


def test_python_older_than_minimum_is_critical_with_remediation():
    result = checks.check_python((3, 10, 12), "3.11")
    assert result["status"] == "fail"
    assert result["severity"] == "critical"
    assert "3.10" in result["message"] and "3.11" in result["message"]
    assert "ansible_python_interpreter" in result["remediation"]


def test_python_at_minimum_passes_without_remediation():
    result = checks.check_python((3, 11, 2), "3.11")
    assert result["status"] == "ok"
    assert result["remediation"] is None


def test_too_few_cores_and_unknown_architecture_fail():
    cores, arch = checks.check_cpu(1, "s390x", 2, ["x86_64", "aarch64"])
    assert cores["status"] == "fail" and "1 CPU cores, 2 required" in cores["message"]
    assert cores["severity"] == "critical" and "min_cpu_cores" in cores["remediation"]
    assert arch["status"] == "fail" and arch["severity"] == "critical"


def test_memory_below_minimum_names_both_numbers():
    result = checks.check_memory(2048 * 1024**2, 1024 * 1024**2, 16384)
    assert result["status"] == "fail"
    assert "2048 MiB" in result["message"] and "16384 MiB" in result["message"]
    assert "gekko_validation_min_memory_mb" in result["remediation"]


def test_memory_at_minimum_passes():
    assert checks.check_memory(16384 * 1024**2, 8000 * 1024**2, 16384)["status"] == "ok"


def test_disk_free_space_is_checked_per_path():
    assert checks.check_disk("/var/lib/docker", 500 * GIB, 150 * GIB, 100)["status"] == "ok"
    low = checks.check_disk("/var/lib/docker", 500 * GIB, int(99.5 * GIB), 100)
    assert low["status"] == "fail"
    assert low["name"] == "disk:/var/lib/docker"
    assert low["severity"] == "critical"
    assert "99.5 of 500.0 GiB free on /var/lib/docker" in low["message"]


def test_port_held_by_a_host_process_fails_and_names_it():
    result = checks.check_port(8000, {"pid": 4242, "process": "nginx"})
    assert result["status"] == "fail"
    assert "nginx (pid 4242)" in result["message"]
    assert "port" in result["remediation"]


def test_port_held_by_the_platforms_own_container_is_accepted_for_redeploys():
    result = checks.check_port(5432, {"pid": 77, "process": "postgres"}, owned=True)
    assert result["status"] == "ok"
    assert "own container" in result["message"]


def test_port_held_by_an_unidentified_process_still_fails():
    result = checks.check_port(8000, {"pid": None, "process": None})
    assert result["status"] == "fail"
    assert "unidentified process" in result["message"]


def test_free_port_passes():
    assert checks.check_port(8000, None)["status"] == "ok"


def test_missing_command_suggests_the_package():
    result = checks.check_command("debootstrap", None)
    assert result["status"] == "fail"
    assert "apt-get install debootstrap" in result["remediation"]


def test_low_available_memory_is_a_warning_not_a_failure():
    result = checks.check_memory_available(300 * MIB, 512)
    assert (result["status"], result["severity"]) == ("warn", "warning")
    assert "300 MiB" in result["message"] and result["remediation"]
    assert checks.check_memory_available(600 * MIB, 512)["status"] == "ok"


def test_memory_demand_multiplies_instances_and_sorts_biggest_first():
    demand = checks.memory_demand(
        [
            {"name": "users", "memory": "512m", "instances": 1},
            {"name": "trading", "memory": "512m", "instances": 3},
            {"name": "postgres", "memory": "1g", "instances": None},
        ],
        human_to_bytes,
    )
    assert demand == [("trading", 1536 * MIB), ("postgres", 1024 * MIB), ("users", 512 * MIB)]


def test_services_that_fit_with_headroom_pass():
    demand = [("trading", 3072 * MIB), ("users", 1024 * MIB)]
    result = checks.check_resource_fit(demand, 8192 * MIB, 1024)
    assert result["status"] == "ok"
    assert "4096 MiB + 1024 MiB headroom of 8192 MiB" in result["message"]


def test_services_over_the_host_memory_fail_naming_the_biggest_consumers():
    demand = [
        ("trading", 3072 * MIB),
        ("postgres", 2048 * MIB),
        ("redis", 1024 * MIB),
        ("users", 512 * MIB),
    ]
    result = checks.check_resource_fit(demand, 6144 * MIB, 1024)
    assert (result["status"], result["severity"]) == ("fail", "critical")
    assert "6656 MiB + 1024 MiB headroom, the host has 6144 MiB" in result["message"]
    assert "trading 3072 MiB, postgres 2048 MiB, redis 1024 MiB" in result["remediation"]
    assert "users" not in result["remediation"]
    assert "add 1536 MiB" in result["remediation"]


def test_headroom_alone_can_tip_the_fit():
    demand = [("trading", 4096 * MIB)]
    assert checks.check_resource_fit(demand, 4608 * MIB, 512)["status"] == "ok"
    assert checks.check_resource_fit(demand, 4608 * MIB, 513)["status"] == "fail"


def test_version_tuple_reads_distribution_style_versions():
    assert checks.version_tuple("20.10.24+dfsg1") == (20, 10, 24)
    assert checks.version_tuple("22.04") == (22, 4)
    assert checks.version_tuple("12") == (12,)
    assert checks.version_tuple("bookworm") == ()


def test_summary_lists_one_line_per_problem_with_its_fix():
    results = [
        checks.check_python((3, 11, 2), "3.11"),
        checks.check_memory(1024 * 1024**2, 0, 4096),
        checks.check_port(8000, {"pid": 1, "process": "x"}),
    ]
    summary = checks.summarize(results)
    assert summary == {
        "passed": 1,
        "failed": 2,
        "warnings": 0,
        "skipped": 0,
        "ok": False,
        "problems": [
            "memory: 1024 MiB of memory, 4096 MiB required. Fix: " + results[1]["remediation"],
            "port:8000: port 8000 is already in use by x (pid 1). Fix: "
            + results[2]["remediation"],
        ],
        "warning_lines": [],
    }


def test_warnings_and_skips_do_not_fail_the_summary():
    results = [
        checks.check_memory_available(100 * MIB, 512),
        checks.skip("package:tar", "not checked"),
    ]
    summary = checks.summarize(results)
    assert summary["ok"] is True
    assert (summary["warnings"], summary["skipped"], summary["failed"]) == (1, 1, 0)
    assert summary["warning_lines"][0].startswith("memory_available: only 100 MiB")
