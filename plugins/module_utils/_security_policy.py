# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure rules of the security policy gate (the security_policy module, the validate phase).

One function per rule; each takes already-collected settings and returns its violations, dicts
with the rule's name, what is wrong (``detail``), how to fix it (``fix``) and whether an
approval can waive it (``waivable``). Nothing here reads a file or a host, and no function is
given a secret's value except the two measures the controller-side filters use
(:func:`secret_weaknesses`, :func:`totp_seed_problem`), which answer with reasons only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import ipaddress
import re

from ansible_collections.gekko.platform.plugins.module_utils import _container_plan as planning

# Environments that may run without TLS (a developer's machine, a CI runner).
TLS_OPTIONAL_ENVIRONMENTS = ("local",)
# Environments where debug logging is refused.
NO_DEBUG_ENVIRONMENTS = ("prod",)
# Roles the platform must require a second factor of (gekko.security.rbac.MFA_REQUIRED_ROLES).
MFA_ROLES = ("admin",)
# A ticket id: letters, digits and . _ / # : -, with a number in it (SEC-123, CHG0012345,
# OPS/7), so that "yes" or "true" is not taken for an approval.
APPROVAL_PATTERN = re.compile(r"^(?=.*[0-9])[A-Za-z0-9][A-Za-z0-9._/#:-]{1,63}$")
# Base32 as authenticator apps read it, at least 128 bits (26 characters), optional padding.
TOTP_SEED_PATTERN = re.compile(r"^[A-Z2-7]{26,}=*$")

ROOT_USERS = ("root", "0")
TOTP_SEED_FIX = (
    "make a base32 seed of 32 characters, python3 -c 'import pyotp; "
    "print(pyotp.random_base32(32))', and put it in the admin_totp_secret secret "
    "(gekko_vault_admin_totp_secret or GEKKO_ADMIN_TOTP_SECRET)"
)


def violation(rule, detail, fix, waivable=True):
    return {"rule": rule, "detail": detail, "fix": fix, "waivable": waivable}


# ------------------------------------------------------------------ network


def check_tls(environment, tls_enabled):
    """TLS off outside the environments that may run without it."""
    if tls_enabled or environment in TLS_OPTIONAL_ENVIRONMENTS:
        return []
    return [
        violation(
            "tls-disabled",
            "TLS is off (gekko_tls_enabled: false) in %s: the gateway, the services, PostgreSQL "
            "and Redis would talk in plain text; only %s may run without TLS"
            % (environment, ", ".join(TLS_OPTIONAL_ENVIRONMENTS)),
            "set gekko_tls_enabled: true in the inventory (the deploy makes the internal CA and "
            "every host's certificates)",
        )
    ]


def is_loopback(address):
    try:
        return ipaddress.ip_address(str(address).strip()).is_loopback
    except ValueError:
        return False


def is_unspecified(address):
    try:
        return ipaddress.ip_address(str(address).strip()).is_unspecified
    except ValueError:
        return False


def check_bind_address(bind_address, tls_enabled):
    """A bind address other than loopback without TLS, in any environment: the platform would
    answer in plain text to everyone who can reach that address."""
    if tls_enabled or is_loopback(bind_address):
        return []
    what = "every interface" if is_unspecified(bind_address) else "an address other hosts can reach"
    return [
        violation(
            "bind-without-tls",
            "gekko_bind_address is %s (%s) while TLS is off: the gateway, the services and the "
            "datastores would answer there in plain text" % (bind_address, what),
            "turn TLS on (gekko_tls_enabled: true) or bind to loopback "
            "(gekko_bind_address: 127.0.0.1)",
        )
    ]


# ------------------------------------------------------------------ MFA


def mfa_roles_from_source(text):
    """The roles in ``MFA_REQUIRED_ROLES = frozenset({Role.OPERATOR, Role.ADMIN})`` of
    gekko/security/rbac.py, lowercase; None when the assignment is not there."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for node in tree.body:
        targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
        if not any(getattr(t, "id", None) == "MFA_REQUIRED_ROLES" for t in targets):
            continue
        roles = set()
        for item in ast.walk(node.value):
            if isinstance(item, ast.Attribute) and getattr(item.value, "id", None) == "Role":
                roles.add(item.attr.lower())
            elif isinstance(item, ast.Constant) and isinstance(item.value, str):
                roles.add(item.value.lower())
        return sorted(roles)
    return None


def _role_set(roles):
    if roles is None:
        return "not found"
    return "{%s}" % ", ".join(roles) if roles else "empty"


def check_admin_mfa(rbac_source, admin_totp_seed_problem):
    """What the platform enforces, checked on what this deploy ships:

    - the code: gekko.security.rbac.MFA_REQUIRED_ROLES (not a setting: the source the images are
      built from) must name the admin role, or an admin's session works without a second factor;
    - the first admin (made by `gekko migrate`): its TOTP seed must be present and valid, or the
      admin is created without one. Not waivable: migrations cannot enrol an unusable seed.
    """
    found = []
    if rbac_source is not None:
        roles = mfa_roles_from_source(rbac_source)
        missing = [role for role in MFA_ROLES if roles is None or role not in roles]
        if missing:
            found.append(
                violation(
                    "admin-mfa",
                    "the code being deployed does not require MFA for %s: MFA_REQUIRED_ROLES in "
                    "app/gekko/security/rbac.py is %s" % (", ".join(missing), _role_set(roles)),
                    "put Role.ADMIN (and Role.OPERATOR) back in MFA_REQUIRED_ROLES and deploy "
                    "that code",
                )
            )
    if admin_totp_seed_problem:
        found.append(
            violation(
                "admin-mfa",
                "the first admin's TOTP seed (admin_totp_secret) %s: the admin would have no "
                "second factor" % admin_totp_seed_problem,
                TOTP_SEED_FIX,
                waivable=False,
            )
        )
    return found


def totp_seed_problem(value):
    """Why a TOTP seed cannot give the first admin a second factor, '' when it can. The seed is
    read as secrets/tasks/main.yml loads it (upper case); the answer never holds the value."""
    seed = ("" if value is None else str(value)).strip().upper()
    if not seed:
        return "is empty"
    if not TOTP_SEED_PATTERN.match(seed):
        if re.match(r"^[A-Z2-7]+=*$", seed):
            return "is shorter than 26 base32 characters (128 bits)"
        return "is not base32 (A-Z, 2-7)"
    return ""


# ------------------------------------------------------------------ logging


def check_log_levels(environment, log_levels):
    """DEBUG logging in prod: debug lines carry request details, payloads and timings."""
    if environment not in NO_DEBUG_ENVIRONMENTS:
        return []
    return [
        violation(
            "debug-logging",
            "%s is DEBUG in %s: debug lines carry request details and flood the log store"
            % (setting, environment),
            "set %s to INFO or WARNING (inventories/prod ships WARNING)" % setting,
        )
        for setting, level in sorted((log_levels or {}).items())
        if str(level or "").strip().upper() == "DEBUG"
    ]


# ------------------------------------------------------------------ exchanges


def check_exchange_mode(environment, exchange_mode):
    """Live trading sends users' orders, with their own keys, to real venues: never by default,
    and never without a recorded approval."""
    if exchange_mode != "live":
        return []
    return [
        violation(
            "exchange-live",
            "gekko_exchange_mode is live in %s: orders go to the real venues with users' own "
            "keys" % environment,
            "prove the environment in sandbox mode first (gekko_exchange_mode: sandbox), then "
            "deploy live with the approval's ticket (-e gekko_security_approval=<ticket>)",
        )
    ]


# ------------------------------------------------------------------ containers


def dockerfile_users(text):
    """Stage name (lowercase; unnamed stages by index) -> the user its image runs as: the last
    USER of the stage, else its parent stage's, else None (unknown: the base image's user,
    root unless that image sets one)."""
    users = {}
    stage = None
    logical = re.sub(r"\\\s*\n", " ", text or "")
    index = 0
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        instruction = parts[0].upper()
        rest = parts[1].strip() if len(parts) > 1 else ""
        if instruction == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            parent = words[0].lower() if words else ""
            name = words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else str(index)
            users[name] = users.get(parent)
            stage = name
            index += 1
        elif instruction == "USER" and stage is not None:
            users[stage] = rest or None
    return users


def dockerfile_user(text, target=None):
    """The user of the image built from ``text`` with ``--target`` (the last stage without)."""
    users = dockerfile_users(text)
    if not users:
        return None
    if target:
        return users.get(str(target).lower())
    return users[list(users)[-1]]


def is_root(user):
    name = str(user or "").strip().split(":", 1)[0]
    return name == "" or name in ROOT_USERS


def effective_container(spec, defaults):
    """The settings the container will run with: the spec over the defaults of what runs it."""
    merged = dict(defaults)
    merged.update((k, v) for k, v in spec.items() if v is not None)
    return merged


def _capability(name):
    name = str(name).strip().upper()
    return name[4:] if name.startswith("CAP_") else name


def check_container(container, image_users):
    """Privileged, root, kept or added capabilities, no no-new-privileges, writable root."""
    name = container.get("name") or container.get("service") or "a container"
    image = container.get("image") or ""
    found = []
    if container.get("privileged"):
        found.append(
            violation(
                "container-privileged",
                "%s runs privileged (every device and capability of the host)" % name,
                "remove privileged from its container settings",
            )
        )
    user = container.get("user")
    if not user:
        if image in image_users:
            user = image_users[image]
            if not user:
                found.append(
                    violation(
                        "container-root",
                        "%s runs as root: its image (%s) sets no USER" % (name, image),
                        "set a USER in the image's Dockerfile or a non-root user for the container",
                    )
                )
            elif is_root(user):
                found.append(
                    violation(
                        "container-root",
                        "%s runs as root: its image (%s) sets USER %s" % (name, image, user),
                        "set a non-root USER in the image's Dockerfile",
                    )
                )
        else:
            found.append(
                violation(
                    "container-root",
                    "%s runs as its image's default user (%s), which the deploy does not know: "
                    "Docker runs it as root unless the image sets USER" % (name, image or "?"),
                    "set a non-root user for it, e.g. user: '65534:65534' in its gekko_services "
                    "entry (or use the platform's own image)",
                )
            )
    elif is_root(user):
        found.append(
            violation(
                "container-root",
                "%s runs as root (user %s)" % (name, user),
                "set a non-root user (the platform's images run as 10001:10001)",
            )
        )
    dropped = [_capability(c) for c in container.get("cap_drop") or []]
    added = [_capability(c) for c in container.get("cap_add") or []]
    if "ALL" not in dropped:
        found.append(
            violation(
                "container-capabilities",
                "%s keeps Linux capabilities: cap_drop does not drop ALL (%s)"
                % (name, ", ".join(dropped) or "nothing dropped"),
                "drop every capability (cap_drop: [ALL])",
            )
        )
    if added:
        found.append(
            violation(
                "container-capabilities",
                "%s adds Linux capabilities: %s" % (name, ", ".join(added)),
                "remove cap_add; the platform's containers need no capability",
            )
        )
    options = [
        str(o).replace("=", ":").replace(" ", "") for o in container.get("security_opts") or []
    ]
    if not any(o in ("no-new-privileges", "no-new-privileges:true") for o in options):
        found.append(
            violation(
                "container-new-privileges",
                "%s may gain privileges through setuid programs: no-new-privileges is not set"
                % name,
                "add security_opts: [no-new-privileges]",
            )
        )
    if not container.get("read_only"):
        found.append(
            violation(
                "container-writable-root",
                "%s has a writable root file system" % name,
                "set read_only: true (with a tmpfs for scratch space)",
            )
        )
    return found


def check_containers(service_containers, containers, image_users):
    """``service_containers``: specs for gekko.platform.service_containers (its defaults apply to
    what a spec leaves out); ``containers``: settings given to Docker as they are (Docker's
    defaults apply: not read-only, every default capability kept)."""
    found = []
    for spec in service_containers or []:
        found.extend(
            check_container(effective_container(spec, planning.HARDENING_DEFAULTS), image_users)
        )
    for spec in containers or []:
        found.extend(check_container(effective_container(spec, {}), image_users))
    return found


# ------------------------------------------------------------------ secrets


def secret_weaknesses(value, min_length, forbidden_values):
    """Why a secret is weak, as predicates for its name ("is shorter than 32 characters"); []
    when it is not. Never returns the value. The same rule as roles/secrets/tasks/strength.yml
    has always applied."""
    value = "" if value is None else str(value)
    if len(value) < int(min_length):
        return ["is shorter than %d characters" % int(min_length)]
    forbidden = set(str(v).lower() for v in forbidden_values or [])
    if value.lower() in forbidden or len(set(value)) < 4:
        return ["is a well-known or repetitive value"]
    return []


def check_secret_strength(weak_secrets):
    return [
        violation(
            "secret-strength",
            "%s %s" % (secret["name"], "; ".join(secret["weaknesses"])),
            "use a random value of at least gekko_secret_min_length characters (for example "
            "`openssl rand -base64 48`), then deploy or run playbooks/rotate-secrets.yml",
        )
        for secret in weak_secrets or []
        if secret.get("weaknesses")
    ]


def check_secret_plaintext(plaintext_secrets):
    return [
        violation(
            "secret-plaintext",
            "a secret is in plain text: %s" % where,
            "move it to a vault-encrypted file (`ansible-vault encrypt FILE`, or inline !vault "
            "values) or to the controller's environment (gekko_secrets_source: env), then "
            "rotate it: it has been exposed",
        )
        for where in plaintext_secrets or []
    ]


# ------------------------------------------------------------------ the gate


def evaluate(settings):
    """Every rule over the settings (the security_policy module's parameters)."""
    image_users = dict(
        (image["ref"], dockerfile_user(image.get("dockerfile"), image.get("target")))
        for image in settings.get("images") or []
    )
    found = []
    found += check_tls(settings["environment"], settings["tls_enabled"])
    found += check_bind_address(settings["bind_address"], settings["tls_enabled"])
    found += check_admin_mfa(settings.get("rbac_source"), settings.get("admin_totp_seed_problem"))
    found += check_log_levels(settings["environment"], settings.get("log_levels"))
    found += check_exchange_mode(settings["environment"], settings.get("exchange_mode", "paper"))
    found += check_containers(
        settings.get("service_containers"), settings.get("containers"), image_users
    )
    found += check_secret_strength(settings.get("weak_secrets"))
    found += check_secret_plaintext(settings.get("plaintext_secrets"))
    return found


def approval_problem(ticket):
    """Why ``ticket`` cannot stand for an approval, '' when it can."""
    if not ticket:
        return "no approval given"
    if not APPROVAL_PATTERN.match(ticket):
        return (
            "gekko_security_approval must be the approval's ticket id (letters, digits and "
            ". _ / # : -, 2 to 64 characters, with a number, e.g. SEC-123), not %r" % ticket[:80]
        )
    return ""


def report_lines(violations):
    return [
        "[%s] %s. Fix: %s.%s"
        % (
            v["rule"],
            v["detail"],
            v["fix"],
            "" if v["waivable"] else " (an approval cannot waive this)",
        )
        for v in violations
    ]


def failure_message(violations, ticket=""):
    """The message that stops the deploy: each violation and its fix, then how to approve."""
    blocking = [v for v in violations if not (ticket and v["waivable"])]
    lines = [
        "The security policy refuses this deploy (%d violation%s); nothing has changed:"
        % (len(blocking), "" if len(blocking) == 1 else "s")
    ]
    lines += ["- " + line for line in report_lines(blocking)]
    waivable = len(violations) - len(blocking)
    if waivable:
        lines.append("The approval %s waives the other %d, but not these." % (ticket, waivable))
    if any(v["waivable"] for v in blocking):
        lines.append(
            "Fix each one, or record an approval to proceed anyway: "
            "-e gekko_security_approval=<ticket> (the audit log keeps the ticket, who ran the "
            "deploy and the violations it waived)."
        )
    return "\n".join(lines)
