"""Rules of the validate_host module, over psutil-shaped data."""

from ansible_collections.gekko.platform.plugins.module_utils import _host_checks as checks

GIB = 1024**3


def test_python_older_than_minimum_is_critical_with_remediation():
    result = checks.check_python((3, 10, 12), "3.11")
    assert result["status"] == "fail"
    assert result["severity"] == "critical"
    assert "3.10" in result["message"] and "3.11" in result["message"]
    assert "ansible_python_interpreter" in result["remediation"]


def test_python_at_minimum_passes_without_remediation():
    result = checks.check_python((3, 11, 2), "3.11")
    assert result["status"] == "pass"
    assert result["remediation"] is None


def test_too_few_cores_and_unknown_architecture_fail():
    cores, arch = checks.check_cpu(1, "s390x", 2, ["x86_64", "aarch64"])
    assert cores["status"] == "fail" and "1 CPU cores, 2 required" in cores["message"]
    assert arch["status"] == "fail" and arch["severity"] == "critical"


def test_memory_below_minimum_names_both_numbers():
    result = checks.check_memory(2048 * 1024**2, 1024 * 1024**2, 16384)
    assert result["status"] == "fail"
    assert "2048 MiB" in result["message"] and "16384 MiB" in result["message"]
    assert "gekko_validation_min_memory_mb" in result["remediation"]


def test_memory_at_minimum_passes():
    assert checks.check_memory(16384 * 1024**2, 8000 * 1024**2, 16384)["status"] == "pass"


def test_disk_free_space_is_checked_per_path():
    assert checks.check_disk("/var/lib/docker", 150 * GIB, 100)["status"] == "pass"
    low = checks.check_disk("/var/lib/docker", int(99.5 * GIB), 100)
    assert low["status"] == "fail"
    assert low["check"] == "disk:/var/lib/docker"
    assert "99.5 GiB free" in low["message"]


def test_port_held_by_a_host_process_fails_and_names_it():
    result = checks.check_port(8000, {"pid": 4242, "process": "nginx"})
    assert result["status"] == "fail"
    assert "nginx (pid 4242)" in result["message"]
    assert "port" in result["remediation"]


def test_port_held_by_the_platforms_own_container_is_accepted_for_redeploys():
    result = checks.check_port(5432, {"pid": 77, "process": "postgres"}, owned=True)
    assert result["status"] == "pass"
    assert "own container" in result["message"]


def test_port_held_by_an_unidentified_process_still_fails():
    result = checks.check_port(8000, {"pid": None, "process": None})
    assert result["status"] == "fail"
    assert "unidentified process" in result["message"]


def test_free_port_passes():
    assert checks.check_port(8000, None)["status"] == "pass"


def test_missing_command_suggests_the_package():
    result = checks.check_command("debootstrap", None)
    assert result["status"] == "fail"
    assert "apt-get install debootstrap" in result["remediation"]


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
        "ok": False,
        "problems": [
            "memory: 1024 MiB of memory, 4096 MiB required. Fix: " + results[1]["remediation"],
            "port:8000: port 8000 is already in use by x (pid 1). Fix: "
            + results[2]["remediation"],
        ],
    }
