"""The security policy gate: each rule (a violation and the clean case), the fixes, the
approval, the module's messages, and the real inputs it is given (the Dockerfile, rbac.py, the
datastores' hardening, service_containers' defaults, the shipped inventories)."""

import json
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args
from ansible_collections.gekko.platform.plugins.filter.secret_weaknesses import (
    secret_weaknesses as weaknesses_filter,
)
from ansible_collections.gekko.platform.plugins.filter.totp_seed_problem import (
    totp_seed_problem as seed_filter,
)
from ansible_collections.gekko.platform.plugins.module_utils import _container_plan as planning
from ansible_collections.gekko.platform.plugins.module_utils import _security_policy as policy
from ansible_collections.gekko.platform.plugins.modules import security_policy, service_containers

from gekko.security.rbac import MFA_REQUIRED_ROLES

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = (REPO / "app/images/app.Dockerfile").read_text()
RBAC = (REPO / "app/gekko/security/rbac.py").read_text()
APP_IMAGE = "gekko/app (app/images/app.Dockerfile, target app)"
IMAGES = [{"ref": APP_IMAGE, "dockerfile": DOCKERFILE, "target": "app"}]
SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
# A bind to every interface: what the gate refuses without TLS.
WILDCARD = "0.0.0.0"  # noqa: S104


def rules(found):
    return [v["rule"] for v in found]


def settings(**overrides):
    """A clean prod host: every rule passes."""
    base = dict(
        environment="prod",
        tls_enabled=True,
        bind_address="10.0.0.5",
        log_levels={"gekko_log_level": "WARNING", "gekko_dynamic_config.log_level": ""},
        service_containers=[{"name": "gekko-users", "image": APP_IMAGE}],
        containers=[
            {
                "name": "gekko-postgres",
                "user": "postgres",
                "read_only": True,
                "cap_drop": ["ALL"],
                "security_opts": ["no-new-privileges"],
            }
        ],
        images=IMAGES,
        rbac_source=RBAC,
        admin_totp_seed_problem="",
        weak_secrets=[],
        plaintext_secrets=[],
        approval="",
    )
    base.update(overrides)
    return base


# ------------------------------------------------------------------ TLS and binds


@pytest.mark.parametrize("environment", ["dev", "staging", "prod"])
def test_tls_off_outside_local_is_a_violation_with_its_fix(environment):
    [found] = policy.check_tls(environment, False)
    assert found["rule"] == "tls-disabled" and found["waivable"]
    assert f"TLS is off (gekko_tls_enabled: false) in {environment}" in found["detail"]
    assert "gekko_tls_enabled: true" in found["fix"]


def test_tls_off_is_fine_in_local_and_tls_on_everywhere():
    assert policy.check_tls("local", False) == []
    assert policy.check_tls("prod", True) == []


@pytest.mark.parametrize(
    ("address", "what"),
    [(WILDCARD, "every interface"), ("10.77.0.11", "an address other hosts can reach")],
)
def test_a_bind_address_other_than_loopback_without_tls_is_a_violation(address, what):
    [found] = policy.check_bind_address(address, tls_enabled=False)
    assert found["rule"] == "bind-without-tls"
    assert f"gekko_bind_address is {address} ({what}) while TLS is off" in found["detail"]
    assert "gekko_tls_enabled: true" in found["fix"] and "127.0.0.1" in found["fix"]


@pytest.mark.parametrize(
    ("address", "tls"),
    [("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("10.0.0.5", True)],
)
def test_loopback_binds_and_any_bind_with_tls_pass(address, tls):
    assert policy.check_bind_address(address, tls) == []


def test_local_with_a_wildcard_bind_and_no_tls_is_refused():
    found = policy.evaluate(settings(environment="local", tls_enabled=False, bind_address=WILDCARD))
    assert rules(found) == ["bind-without-tls"]


# ------------------------------------------------------------------ MFA


def test_the_mfa_roles_are_read_from_the_code_that_is_deployed():
    assert policy.mfa_roles_from_source(RBAC) == sorted(r.value for r in MFA_REQUIRED_ROLES)
    assert policy.check_admin_mfa(RBAC, "") == []


def test_code_that_does_not_require_mfa_of_admins_is_a_violation():
    weakened = RBAC.replace(
        "MFA_REQUIRED_ROLES = frozenset({Role.OPERATOR, Role.ADMIN})",
        "MFA_REQUIRED_ROLES = frozenset({Role.OPERATOR})",
    )
    assert weakened != RBAC
    [found] = policy.check_admin_mfa(weakened, "")
    assert found["rule"] == "admin-mfa" and found["waivable"]
    assert "does not require MFA for admin" in found["detail"]
    assert "{operator}" in found["detail"]
    assert "Role.ADMIN" in found["fix"]
    [gone] = policy.check_admin_mfa("ROLES = 1\n", "")
    assert "not found" in gone["detail"]


def test_an_unusable_admin_seed_is_a_violation_an_approval_cannot_waive():
    [found] = policy.check_admin_mfa(None, "is not base32 (A-Z, 2-7)")
    assert found["rule"] == "admin-mfa" and not found["waivable"]
    assert "TOTP seed (admin_totp_secret) is not base32" in found["detail"]
    assert "pyotp.random_base32(32)" in found["fix"]


@pytest.mark.parametrize(
    ("seed", "problem"),
    [
        (SEED, ""),
        (SEED.lower(), ""),
        (SEED + "====", ""),
        ("", "is empty"),
        (None, "is empty"),
        ("JBSWY3DPEHPK3PXP", "is shorter than 26 base32 characters (128 bits)"),
        ("JBSWY3DPEHPK3PXP18JBSWY3DPEHPK3PXP", "is not base32 (A-Z, 2-7)"),
    ],
)
def test_the_totp_seed_is_judged_as_the_platform_reads_it(seed, problem):
    assert policy.totp_seed_problem(seed) == problem
    assert seed_filter(seed) == problem
    if seed:
        assert seed.upper() not in problem.upper()


# ------------------------------------------------------------------ logging


def test_debug_logging_in_prod_is_a_violation_per_setting():
    found = policy.check_log_levels(
        "prod", {"gekko_log_level": "debug", "gekko_dynamic_config.log_level": "DEBUG"}
    )
    assert rules(found) == ["debug-logging", "debug-logging"]
    assert found[0]["detail"].startswith("gekko_dynamic_config.log_level is DEBUG in prod")
    assert found[1]["fix"] == (
        "set gekko_log_level to INFO or WARNING (inventories/prod ships WARNING)"
    )


@pytest.mark.parametrize(
    ("environment", "level"), [("staging", "DEBUG"), ("local", "DEBUG"), ("prod", "INFO")]
)
def test_debug_logging_outside_prod_and_other_levels_pass(environment, level):
    assert policy.check_log_levels(environment, {"gekko_log_level": level}) == []


# ------------------------------------------------------------------ exchanges


def test_live_trading_is_a_waivable_violation_in_any_environment():
    found = policy.check_exchange_mode("staging", "live")
    assert rules(found) == ["exchange-live"]
    assert found[0]["waivable"] is True
    assert "gekko_security_approval" in found[0]["fix"]


@pytest.mark.parametrize("mode", ["paper", "sandbox"])
def test_paper_and_sandbox_trading_pass(mode):
    assert policy.check_exchange_mode("prod", mode) == []


# ------------------------------------------------------------------ containers


def test_the_platform_images_run_as_the_user_of_their_dockerfile_stage():
    users = policy.dockerfile_users(DOCKERFILE)
    assert users == {"app": "10001:10001", "signals": "10001:10001"}
    assert policy.dockerfile_user(DOCKERFILE, "signals") == "10001:10001"


def test_a_stage_inherits_its_parent_user_and_an_external_base_is_unknown():
    text = (
        "FROM debian:bookworm AS base\n"
        "RUN apt-get update \\\n"
        "    && USER=nobody true\n"
        "FROM base AS builder\n"
        "USER 1000\n"
        "FROM builder AS final\n"
        "RUN true\n"
        "FROM --platform=linux/amd64 builder\n"
        "USER root\n"
    )
    assert policy.dockerfile_users(text) == {
        "base": None,
        "builder": "1000",
        "final": "1000",
        "3": "root",
    }
    assert policy.dockerfile_user(text) == "root"
    assert policy.dockerfile_user("", "app") is None


def test_a_service_container_spec_gets_service_containers_hardening_and_its_image_user():
    image_users = {APP_IMAGE: "10001:10001"}
    assert (
        policy.check_containers([{"name": "gekko-users", "image": APP_IMAGE}], [], image_users)
        == []
    )


def test_the_gate_judges_specs_by_the_defaults_service_containers_really_applies(monkeypatch):
    captured = {}

    class Stop(Exception):
        pass

    def fake_module(argument_spec, **kwargs):
        captured.update(argument_spec["containers"]["options"])
        raise Stop

    monkeypatch.setattr(service_containers, "AnsibleModule", fake_module)
    with pytest.raises(Stop):
        service_containers.main()
    for key in ("read_only", "cap_drop", "security_opts"):
        assert captured[key]["default"] == planning.HARDENING_DEFAULTS[key]
    # No option to run privileged or to add capabilities.
    assert "privileged" not in captured and "cap_add" not in captured


def test_a_privileged_container_is_a_violation():
    found = policy.check_containers(
        [{"name": "x", "image": APP_IMAGE, "privileged": True}], [], {APP_IMAGE: "1"}
    )
    assert rules(found) == ["container-privileged"]
    assert found[0]["detail"].startswith("x runs privileged")
    assert found[0]["fix"] == "remove privileged from its container settings"


@pytest.mark.parametrize("user", ["root", "0", "0:0", "root:root"])
def test_a_container_that_runs_as_root_is_a_violation(user):
    [found] = policy.check_containers([{"name": "x", "image": APP_IMAGE, "user": user}], [], {})
    assert found["rule"] == "container-root"
    assert f"x runs as root (user {user})" in found["detail"]


def test_an_image_of_unknown_user_without_a_user_counts_as_root():
    [found] = policy.check_containers(
        [{"name": "gekko-trading", "image": "gekko/base:bookworm"}], [], {}
    )
    assert found["rule"] == "container-root"
    assert "default user (gekko/base:bookworm), which the deploy does not know" in found["detail"]
    assert "user: '65534:65534' in its gekko_services entry" in found["fix"]
    # The fix: a user of its own.
    assert (
        policy.check_containers(
            [{"name": "gekko-trading", "image": "gekko/base:bookworm", "user": "65534:65534"}],
            [],
            {},
        )
        == []
    )


def test_an_image_built_without_a_user_or_as_root_is_a_violation():
    found = policy.check_containers(
        [{"name": "a", "image": "none"}, {"name": "b", "image": "root"}],
        [],
        {"none": None, "root": "root"},
    )
    assert rules(found) == ["container-root", "container-root"]
    assert "its image (none) sets no USER" in found[0]["detail"]
    assert "its image (root) sets USER root" in found[1]["detail"]


def test_docker_defaults_keep_capabilities_privileges_and_a_writable_root():
    found = policy.check_containers([], [{"name": "bare", "user": "app"}], {})
    assert rules(found) == [
        "container-capabilities",
        "container-new-privileges",
        "container-writable-root",
    ]
    assert (
        "bare keeps Linux capabilities: cap_drop does not drop ALL (nothing dropped)"
        in found[0]["detail"]
    )
    assert found[0]["fix"] == "drop every capability (cap_drop: [ALL])"
    assert found[1]["fix"] == "add security_opts: [no-new-privileges]"
    assert found[2]["fix"].startswith("set read_only: true")


def test_added_capabilities_are_a_violation_and_cap_spellings_are_understood():
    found = policy.check_containers(
        [{"name": "x", "image": APP_IMAGE, "cap_drop": ["cap_all"], "cap_add": ["CAP_NET_ADMIN"]}],
        [],
        {APP_IMAGE: "10001"},
    )
    assert rules(found) == ["container-capabilities"]
    assert found[0]["detail"] == "x adds Linux capabilities: NET_ADMIN"


def test_no_new_privileges_may_be_spelled_with_a_value():
    spec = {"name": "x", "user": "1", "read_only": True, "cap_drop": ["ALL"]}
    for option in ["no-new-privileges:true", "no-new-privileges=true"]:
        assert policy.check_containers([], [dict(spec, security_opts=[option])], {}) == []


def test_the_datastore_containers_as_the_role_runs_them_pass():
    variables = yaml.safe_load((REPO / "roles/datastores/vars/main.yml").read_text())
    containers = list(variables["_gekko_datastore_containers"].values())
    assert [c["user"] for c in containers] == ["postgres", "redis", "postgres"]  # the backup agent
    assert policy.check_containers([], containers, {}) == []


# ------------------------------------------------------------------ secrets


@pytest.mark.parametrize(
    ("value", "weakness"),
    [
        ("short", "is shorter than 32 characters"),
        ("Password" * 4, ""),
        ("a" * 40, "is a well-known or repetitive value"),
        ("abab" * 10, "is a well-known or repetitive value"),
        ("changeme", "is shorter than 32 characters"),
    ],
)
def test_secret_strength_is_the_rule_the_secrets_role_applied(value, weakness):
    assert policy.secret_weaknesses(value, 32, ["changeme"]) == ([weakness] if weakness else [])


def test_a_forbidden_value_long_enough_is_still_weak():
    assert policy.secret_weaknesses("ChangeMe", 8, ["changeme"]) == [
        "is a well-known or repetitive value"
    ]


def test_the_filter_names_the_weak_secrets_and_never_shows_a_value():
    values = {"GEKKO_REDIS_PASSWORD": "changeme", "GEKKO_POSTGRES_PASSWORD": "x9" * 20 + "Zq"}
    found = weaknesses_filter(values, 32, ["changeme"])
    assert found == [
        {"name": "GEKKO_REDIS_PASSWORD", "weaknesses": ["is shorter than 32 characters"]}
    ]
    assert "changeme" not in json.dumps(found) and "x9x9" not in json.dumps(found)


def test_weak_and_plaintext_secrets_are_violations_with_their_fixes():
    [weak] = policy.check_secret_strength(
        [{"name": "GEKKO_REDIS_PASSWORD", "weaknesses": ["is shorter than 32 characters"]}]
    )
    assert weak["rule"] == "secret-strength"
    assert weak["detail"] == "GEKKO_REDIS_PASSWORD is shorter than 32 characters"
    assert "openssl rand -base64 48" in weak["fix"]
    [clear] = policy.check_secret_plaintext(["inventories/prod/group_vars/all/vault.yml"])
    assert clear["rule"] == "secret-plaintext"
    assert clear["detail"] == "a secret is in plain text: inventories/prod/group_vars/all/vault.yml"
    assert "ansible-vault encrypt FILE" in clear["fix"] and "rotate it" in clear["fix"]
    assert policy.check_secret_strength([]) == policy.check_secret_plaintext([]) == []


# ------------------------------------------------------------------ the shipped settings


def inventory_settings(path):
    """common's defaults under an inventory's group_vars (bind addresses from facts aside)."""
    merged = yaml.safe_load((REPO / "roles/common/defaults/main.yml").read_text())
    merged.update(yaml.safe_load((REPO / path).read_text()))
    return merged


@pytest.mark.parametrize(
    "path",
    [
        "inventories/local/group_vars/all/main.yml",
        "inventories/staging/group_vars/all/main.yml",
        "inventories/prod/group_vars/all/main.yml",
        "lab/group_vars/all/main.yml",
    ],
)
def test_the_shipped_inventories_and_the_lab_meet_the_policy(path):
    values = inventory_settings(path)
    bind = values["gekko_bind_address"]
    found = policy.evaluate(
        settings(
            environment=values["gekko_environment"],
            tls_enabled=values["gekko_tls_enabled"],
            # staging and prod bind each host's own address (a fact): with TLS on, any is fine.
            bind_address=bind if "{{" not in bind else "10.0.0.5",
            log_levels={"gekko_log_level": values["gekko_log_level"]},
        )
    )
    assert found == []


# ------------------------------------------------------------------ the gate and the module


def test_a_clean_host_passes():
    assert policy.evaluate(settings()) == []
    failed, message, result, warning = security_policy.run(settings())
    assert not failed and warning is None
    assert result["violations"] == result["waived"] == result["report"] == []
    assert message == "The deploy meets the security policy."


def test_violations_fail_with_each_one_its_fix_and_how_to_approve():
    failed, message, result, warning = security_policy.run(
        settings(log_levels={"gekko_log_level": "DEBUG"}, tls_enabled=False)
    )
    assert failed and warning is None
    lines = message.splitlines()
    assert lines[0] == (
        "The security policy refuses this deploy (3 violations); nothing has changed:"
    )
    assert lines[1].startswith("- [tls-disabled] TLS is off")
    assert lines[2].startswith("- [bind-without-tls] gekko_bind_address is 10.0.0.5")
    assert lines[3].startswith("- [debug-logging] gekko_log_level is DEBUG in prod")
    assert all(". Fix: " in line for line in lines[1:4])
    assert "-e gekko_security_approval=<ticket>" in lines[-1]
    assert rules(result["violations"]) == ["tls-disabled", "bind-without-tls", "debug-logging"]
    assert result["waived"] == [] and result["approval"] == ""
    assert len(result["report"]) == 3


def test_an_approval_waives_the_violations_and_warns():
    failed, message, result, warning = security_policy.run(
        settings(log_levels={"gekko_log_level": "DEBUG"}, approval="SEC-123")
    )
    assert not failed
    assert message == "Waived by approval SEC-123."
    assert result["waived"] == result["violations"] and rules(result["waived"]) == ["debug-logging"]
    assert result["approval"] == "SEC-123"
    assert warning.startswith("Security policy: approval SEC-123 waives 1 violation(s)")
    assert "[debug-logging]" in warning


def test_an_approval_cannot_waive_an_unusable_admin_seed():
    failed, message, result, warning = security_policy.run(
        settings(
            log_levels={"gekko_log_level": "DEBUG"},
            admin_totp_seed_problem="is empty",
            approval="SEC-123",
        )
    )
    assert failed and result["waived"] == [] and warning is None
    assert "refuses this deploy (1 violation)" in message
    assert "(an approval cannot waive this)" in message
    assert "The approval SEC-123 waives the other 1, but not these." in message
    assert "gekko_security_approval=<ticket>" not in message


@pytest.mark.parametrize("ticket", ["yes please", "yes", "true", "x", "SEC-1; rm -rf /", "é1"])
def test_an_approval_must_be_a_ticket_id(ticket):
    failed, message, result, warning = security_policy.run(
        settings(tls_enabled=False, approval=ticket)
    )
    assert failed and result["waived"] == [] and warning is None
    assert message.startswith("gekko_security_approval must be the approval's ticket id")


@pytest.mark.parametrize("ticket", ["SEC-123", "CHG0012345", "OPS/7", "jira:SEC-9"])
def test_ticket_ids_are_accepted(ticket):
    assert policy.approval_problem(ticket) == ""


def run_main(capsys, **args):
    with patch_module_args(args), pytest.raises(SystemExit):
        security_policy.main()
    return json.loads(capsys.readouterr().out)


def test_the_module_fails_with_the_report(capsys):
    result = run_main(
        capsys,
        environment="local",
        tls_enabled=False,
        bind_address=WILDCARD,
        containers=[{"name": "gekko-redis", "user": "root", "read_only": True,
                     "cap_drop": ["ALL"], "security_opts": ["no-new-privileges"]}],
    )  # fmt: skip
    assert result["failed"] and result["changed"] is False
    assert result["msg"].startswith("The security policy refuses this deploy (2 violations)")
    assert "[container-root] gekko-redis runs as root (user root)" in result["msg"]
    assert "-e gekko_security_approval=<ticket>" in result["msg"]


def test_the_module_with_an_approval_succeeds_and_warns(capsys, monkeypatch):
    # Where the warning goes depends on whether controller code is loaded in this process.
    warned = []
    monkeypatch.setattr(
        security_policy.AnsibleModule, "warn", lambda self, text: warned.append(text)
    )
    result = run_main(
        capsys,
        environment="local",
        tls_enabled=False,
        bind_address=WILDCARD,
        approval="SEC-123",
    )
    assert not result.get("failed") and result["changed"] is False
    assert rules(result["waived"]) == ["bind-without-tls"]
    assert result["approval"] == "SEC-123"
    assert len(warned) == 1 and "approval SEC-123 waives 1 violation(s)" in warned[0]
    assert "[bind-without-tls]" in warned[0]
