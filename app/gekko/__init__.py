"""Gekko trading platform: API gateway and domain services in one package."""

__version__ = "0.1.0"
