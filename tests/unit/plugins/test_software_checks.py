"""Platform, Docker, datastore and package rules of validate_host, over data read from a host."""

from ansible_collections.gekko.platform.plugins.module_utils import _software_checks as software

DEBIAN_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
ID=debian
# a comment
HOME_URL='https://www.debian.org/'
"""
MIN_VERSIONS = {"debian": "11", "ubuntu": "22.04", "macos": "12"}


def linux(os_release_text):
    return software.describe_os("Linux", software.parse_os_release(os_release_text), "")


def test_os_release_is_parsed_with_its_quoting():
    fields = software.parse_os_release(DEBIAN_OS_RELEASE)
    assert fields["ID"] == "debian"
    assert fields["VERSION_ID"] == "12"
    assert fields["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert fields["HOME_URL"] == "https://www.debian.org/"


def test_supported_debian_passes():
    result = software.check_os(linux(DEBIAN_OS_RELEASE), MIN_VERSIONS)
    assert result["status"] == "ok"
    assert "Debian GNU/Linux 12" in result["message"]


def test_old_ubuntu_fails_with_the_version_to_upgrade_to():
    facts = linux('ID=ubuntu\nVERSION_ID="20.04"\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n')
    result = software.check_os(facts, MIN_VERSIONS)
    assert (result["status"], result["severity"]) == ("fail", "critical")
    assert "ubuntu 22.04" in result["remediation"]


def test_untested_linux_distribution_is_a_warning():
    facts = linux('ID=arch\nPRETTY_NAME="Arch Linux"\n')
    result = software.check_os(facts, MIN_VERSIONS)
    assert result["status"] == "warn"
    assert "gekko_validation_os_min_versions" in result["remediation"]


def test_macos_12_is_supported_and_11_is_not():
    monterey = software.describe_os("Darwin", {}, "12.7.1")
    assert monterey["distribution"] == "macos"
    assert software.check_os(monterey, MIN_VERSIONS)["status"] == "ok"
    big_sur = software.describe_os("Darwin", {}, "11.7")
    result = software.check_os(big_sur, {})  # 12 even when the inventory lists no macos
    assert result["status"] == "fail"
    assert "macOS 11.7" in result["message"]


def test_windows_is_not_a_supported_platform():
    result = software.check_os(software.describe_os("Windows", {}, ""), MIN_VERSIONS)
    assert result["status"] == "fail"
    assert "Linux" in result["remediation"]


def test_answering_engine_reports_version_and_api():
    answer = {"Version": "20.10.24+dfsg1", "ApiVersion": "1.41"}
    result = software.check_docker(answer, "required", "20.10")
    assert result["status"] == "ok"
    assert "20.10.24+dfsg1 (API 1.41" in result["message"]


def test_old_engine_fails_even_when_the_deploy_would_install_one():
    result = software.check_docker({"Version": "19.03.15"}, "optional", "20.10")
    assert result["status"] == "fail"
    assert "--only-upgrade docker.io" in result["remediation"]


def test_absent_engine_is_a_warning_when_the_deploy_installs_it():
    result = software.check_docker("connection refused", "optional", "20.10")
    assert (result["status"], result["severity"]) == ("warn", "warning")
    assert "connection refused" in result["message"]


def test_absent_engine_fails_when_it_is_required():
    result = software.check_docker("connection refused", "required", "20.10")
    assert (result["status"], result["severity"]) == ("fail", "critical")
    assert "apt-get install docker.io" in result["remediation"]


def test_engine_check_can_be_skipped():
    assert software.check_docker({}, "skip", "20.10")["status"] == "skip"


def test_postgres_answers_to_the_ssl_request_with_s_or_n():
    for reply in (b"S", b"N"):
        assert software.check_datastore("postgres", "db:5432", reply, None)["status"] == "ok"


def test_redis_answers_pong_or_asks_for_a_password():
    for reply in (b"+PONG\r\n", b"-NOAUTH Authentication required.\r\n"):
        assert software.check_datastore("redis", "cache:6379", reply, None)["status"] == "ok"


def test_another_server_on_the_datastore_port_is_not_taken_for_it():
    result = software.check_datastore("redis", "cache:6379", b"HTTP/1.1 400 Bad", None)
    assert result["status"] == "fail"
    assert "not Redis" in result["message"]
    assert "cache:6379" in result["remediation"]


def test_unreachable_datastore_fails_with_the_variable_to_fix():
    result = software.check_datastore("postgres", "db:5432", b"", "Connection refused")
    assert (result["name"], result["status"]) == ("postgres:db:5432", "fail")
    assert "Connection refused" in result["message"]
    assert "gekko_validation_postgres_endpoint" in result["remediation"]


def test_dpkg_output_lists_only_installed_packages():
    output = "tar\tinstalled\t1.34\nold\tconfig-files\t1.0\ncurl\tinstalled\t7.88\n"
    assert software.parse_dpkg_status(output) == {"tar": "1.34", "curl": "7.88"}


def test_missing_package_fails_with_the_apt_command():
    installed = software.parse_dpkg_status("tar\tinstalled\t1.34\nold\tconfig-files\t1.0\n")
    tar, old = software.check_packages(["tar", "old"], installed)
    assert tar["status"] == "ok" and "1.34" in tar["message"]
    assert old["status"] == "fail" and old["remediation"] == "apt-get install old"


def test_packages_are_skipped_with_info_without_dpkg():
    (result,) = software.check_packages(["tar"], None)
    assert (result["status"], result["severity"]) == ("skip", "info")
    assert "dpkg-query" in result["message"]
