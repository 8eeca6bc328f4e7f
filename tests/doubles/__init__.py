"""Loopback doubles of the exchanges, as their official documentation describes them, shared by
the unit and integration suites (pytest puts tests/ on the import path)."""
