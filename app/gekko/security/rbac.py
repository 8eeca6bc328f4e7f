"""Roles and permissions: who may call what.

Every API route declares one Permission in its module's ACCESS table, next to the routes (a
route without one stops the service from starting). A permission is a set of roles, or
anonymous access. A signed-in user has exactly one role, carried in the access token's `role`
claim and changed only by an admin (which ends the user's sessions, so the new role applies at
once).

Operators and admins need a second factor: a session of theirs without one has only the
permissions every signed-in user has (enough to enrol). A sensitive action also wants that
factor proved recently in the session (step-up), whatever the role.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    TRADER = "trader"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


ALL_ROLES = frozenset(Role)
DEFAULT_ROLE = Role.TRADER
MFA_REQUIRED_ROLES = frozenset({Role.OPERATOR, Role.ADMIN})
# How recent the second factor must be for a sensitive action.
STEP_UP_MAX_AGE_S = 300


@dataclass(frozen=True)
class Permission:
    name: str
    roles: frozenset[Role]
    anonymous: bool = False
    # > 0: the session must have proved a second factor within this many seconds (step-up).
    fresh_mfa_s: int = 0

    def allows(self, role: Role | None) -> bool:
        return self.anonymous or (role is not None and role in self.roles)

    def needs_mfa(self, role: Role) -> bool:
        """Whether `role` uses this permission only from a session with a second factor: a
        role that requires MFA, for anything beyond what every signed-in user may do."""
        return bool(self.fresh_mfa_s) or (role in MFA_REQUIRED_ROLES and self.roles != ALL_ROLES)


# Anyone, signed in or not: health, docs, sign-in and registration, market data.
PUBLIC = Permission("public", ALL_ROLES, anonymous=True)
# Any signed-in user, about their own account: profile, sessions, logout, own orders and
# portfolio, the social feed.
SIGNED_IN = Permission("signed-in", ALL_ROLES)
# Placing and cancelling orders, posting, following, asking for signals: traders (and admins).
TRADE = Permission("trade", frozenset({Role.TRADER, Role.ADMIN}))
# The platform's state (services, configuration, KPIs): the people who watch and run it.
OPERATE_READ = Permission("operate-read", frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN}))
# Acting on it (acknowledging an alert): the people who run it.
OPERATE = Permission("operate", frozenset({Role.OPERATOR, Role.ADMIN}))
# Changing roles or settings.
ADMINISTER = Permission("administer", frozenset({Role.ADMIN}))
# The same with a second factor proved in the last few minutes (role changes).
ADMINISTER_STEP_UP = Permission(
    "administer-step-up", frozenset({Role.ADMIN}), fresh_mfa_s=STEP_UP_MAX_AGE_S
)
# Linking or removing a venue key (gekko.services.venue_keys): traders, with step-up.
TRADE_STEP_UP = Permission(
    "trade-step-up", frozenset({Role.TRADER, Role.ADMIN}), fresh_mfa_s=STEP_UP_MAX_AGE_S
)
# A signed-in user weakening their own account (turning MFA off): step-up as well.
SIGNED_IN_STEP_UP = Permission("signed-in-step-up", ALL_ROLES, fresh_mfa_s=STEP_UP_MAX_AGE_S)

# (method, route path template) -> Permission, as each module declares it.
AccessTable = Mapping[tuple[str, str], Permission]


def parse_role(value: object) -> Role:
    try:
        return Role(str(value))
    except ValueError:
        raise ValueError(f"unknown role {value!r}; one of {', '.join(Role)}") from None
