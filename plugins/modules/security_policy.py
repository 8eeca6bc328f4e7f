#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: security_policy
short_description: The security policy gate of the validate phase
version_added: 0.1.0
description:
  - Judges a host's deploy settings against the platform's security policy before anything
    changes, and fails with one line per violation and its fix unless O(approval) names the
    approval (a ticket) that waives them.
  - "C(tls-disabled): TLS off in an environment other than V(local)."
  - "C(bind-without-tls): a bind address other than loopback (V(0.0.0.0) included) while TLS is
    off, in any environment."
  - "C(admin-mfa): the code being deployed (O(rbac_source)) does not require MFA for the admin
    role, or the first admin's TOTP seed is unusable (O(admin_totp_seed_problem); this one
    cannot be waived: the deploy cannot create the admin without a usable seed)."
  - "C(debug-logging): a log level of V(DEBUG) in V(prod) (O(log_levels))."
  - "C(container-privileged), C(container-root), C(container-capabilities) (any capability
    kept or added), C(container-new-privileges) (no C(no-new-privileges)) and
    C(container-writable-root): the containers the deploy will run (O(service_containers),
    O(containers))."
  - "C(secret-strength) and C(secret-plaintext): the secrets' findings, measured on the
    controller (O(weak_secrets), O(plaintext_secrets)); no secret value is ever passed to this
    module."
  - Changes nothing; run it on the controller (C(delegate_to) V(localhost)).
author:
  - Gekko platform team (@gekko-platform)
attributes:
  check_mode:
    support: full
    description: The module only judges its parameters, so check mode runs every rule.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
options:
  environment:
    description: The environment deployed to (C(gekko_environment)).
    type: str
    required: true
  tls_enabled:
    description: Whether TLS is on (C(gekko_tls_enabled)).
    type: bool
    required: true
  bind_address:
    description: The address the platform listens on (C(gekko_bind_address)).
    type: str
    required: true
  log_levels:
    description:
      - Setting name to the log level it sets, for example C(gekko_log_level) to V(INFO) and
        C(gekko_dynamic_config.log_level) to an empty string (not set).
    type: dict
    default: {}
  exchange_mode:
    description:
      - Where orders go (C(gekko_exchange_mode)). V(live) is a violation (C(exchange-live))
        that only an approval lets through.
    type: str
    default: paper
    choices: [paper, sandbox, live]
  service_containers:
    description:
      - Container specs as M(gekko.platform.service_containers) receives them. What a spec
        leaves out is judged by that module's defaults (read-only root, C(cap_drop=[ALL]),
        C(no-new-privileges)); without C(user), by the user of its C(image) (O(images)).
      - Read keys are C(name), C(image), C(user), C(privileged), C(cap_drop), C(cap_add),
        C(security_opts) and C(read_only); the others are ignored.
    type: list
    elements: dict
    default: []
  containers:
    description:
      - Container settings as given to Docker as they are (for example to
        M(community.docker.docker_container)); Docker's defaults apply to what one leaves out
        (writable root, default capabilities kept).
      - The same keys as O(service_containers).
    type: list
    elements: dict
    default: []
  images:
    description:
      - Images the deploy builds itself, with the Dockerfile they are built from, so that a
        container without a C(user) is judged by the C(USER) its image runs as. A container
        whose image is not listed and that sets no C(user) counts as running as root.
    type: list
    elements: dict
    default: []
    suboptions:
      ref:
        description: The image reference the container specs use.
        type: str
        required: true
      dockerfile:
        description: The text of its Dockerfile.
        type: str
        required: true
      target:
        description: The build target (stage); the last stage when left out.
        type: str
  rbac_source:
    description:
      - The text of C(gekko/security/rbac.py) being deployed; its C(MFA_REQUIRED_ROLES) must
        name the admin role. Not checked when left out.
    type: str
  admin_totp_seed_problem:
    description:
      - Why the first admin's TOTP seed is unusable (for example V(is not base32 (A-Z, 2-7))),
        empty when it is fine; measured on the controller by the
        P(gekko.platform.totp_seed_problem#filter) filter.
    type: str
    default: ""
  weak_secrets:
    description:
      - Secrets found weak on the controller by the P(gekko.platform.secret_weaknesses#filter)
        filter, by name, each with its reasons. Never a value.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Where the secret comes from (a variable or environment variable name).
        type: str
        required: true
      weaknesses:
        description: Why it is weak, for example V(is shorter than 32 characters).
        type: list
        elements: str
        required: true
  plaintext_secrets:
    description: Where a secret is in plain text (a file path, or a variable set in the clear).
    type: list
    elements: str
    default: []
  approval:
    description:
      - The ticket that approves deploying despite the violations (C(gekko_security_approval)).
        With it the module succeeds, warns and returns the violations it waived; the deploy
        records them in the audit log. Violations that cannot be waived still fail.
    type: str
    default: ""
notes:
  - The rules are in C(plugins/module_utils/_security_policy.py), one function each.
seealso:
  - module: gekko.platform.validate_host
  - module: gekko.platform.service_containers
"""

EXAMPLES = r"""
- name: Check the security policy
  gekko.platform.security_policy:
    environment: prod
    tls_enabled: true
    bind_address: 10.0.0.5
    log_levels:
      gekko_log_level: WARNING
    containers:
      - name: gekko-postgres
        user: postgres
        read_only: true
        cap_drop: [ALL]
        security_opts: [no-new-privileges]
    approval: "{{ gekko_security_approval | default('') }}"
  delegate_to: localhost
  register: gekko_security_gate
"""

RETURN = r"""
violations:
  description: Every violation found, waived or not.
  returned: always
  type: list
  elements: dict
  contains:
    rule:
      description: The rule, for example C(tls-disabled).
      type: str
    detail:
      description: What is wrong.
      type: str
    fix:
      description: How to fix it.
      type: str
    waivable:
      description: Whether an approval can waive it.
      type: bool
  sample:
    - rule: debug-logging
      detail: gekko_log_level is DEBUG in prod
      fix: set gekko_log_level to INFO or WARNING
      waivable: true
waived:
  description: The violations O(approval) waived (empty without an approval).
  returned: always
  type: list
  elements: dict
approval:
  description: The approval's ticket when it waived anything, else empty.
  returned: always
  type: str
  sample: SEC-123
report:
  description: One line per violation with its fix.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gekko.platform.plugins.module_utils import _security_policy as policy

ARGUMENT_SPEC = dict(
    environment=dict(type="str", required=True),
    tls_enabled=dict(type="bool", required=True),
    bind_address=dict(type="str", required=True),
    log_levels=dict(type="dict", default={}),
    exchange_mode=dict(type="str", default="paper", choices=["paper", "sandbox", "live"]),
    service_containers=dict(type="list", elements="dict", default=[]),
    containers=dict(type="list", elements="dict", default=[]),
    images=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            ref=dict(type="str", required=True),
            dockerfile=dict(type="str", required=True),
            target=dict(type="str"),
        ),
    ),
    rbac_source=dict(type="str"),
    admin_totp_seed_problem=dict(type="str", default=""),
    weak_secrets=dict(
        type="list",
        elements="dict",
        default=[],
        # Names and reasons only: the values never reach this module.
        no_log=False,
        options=dict(
            name=dict(type="str", required=True),
            weaknesses=dict(type="list", elements="str", required=True),
        ),
    ),
    plaintext_secrets=dict(type="list", elements="str", default=[], no_log=False),
    approval=dict(type="str", default=""),
)


def run(params):
    """(failed, message, result, warning) for the module's parameters."""
    violations = policy.evaluate(params)
    ticket = (params.get("approval") or "").strip()
    result = dict(
        changed=False,
        violations=violations,
        waived=[],
        approval="",
        report=policy.report_lines(violations),
    )
    if not violations:
        return False, "The deploy meets the security policy.", result, None
    if ticket:
        problem = policy.approval_problem(ticket)
        if problem:
            return True, problem, result, None
        if all(v["waivable"] for v in violations):
            result["waived"] = violations
            result["approval"] = ticket
            warning = (
                "Security policy: approval %s waives %d violation(s), recorded in the audit log:\n- %s"
                % (
                    ticket,
                    len(violations),
                    "\n- ".join(result["report"]),
                )
            )
            return False, "Waived by approval %s." % ticket, result, warning
    return True, policy.failure_message(violations, ticket), result, None


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    failed, message, result, warning = run(module.params)
    if failed:
        module.fail_json(msg=message, **result)
    if warning:
        module.warn(warning)
    module.exit_json(msg=message, **result)


if __name__ == "__main__":
    main()
