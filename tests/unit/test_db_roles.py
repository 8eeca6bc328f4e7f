"""The services' database role, as `gekko migrate` reads it from their URL."""

import pytest

from gekko.security.db_roles import DatabaseRoleError, LoginRole


def test_the_services_role_comes_from_its_url_decoded():
    role = LoginRole.from_url("postgresql://gekko_app:p%40ss%2Fword@db:5432/gekko")
    assert role == LoginRole("gekko_app", "p@ss/word")
    with pytest.raises(DatabaseRoleError, match="user and password"):
        LoginRole.from_url("postgresql://db:5432/gekko")
