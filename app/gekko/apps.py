"""Component name -> ASGI app. Imports are lazy so a component loads only what it runs."""

from __future__ import annotations

import importlib

from fastapi import FastAPI

from gekko.config import GATEWAY, Settings


def build_app(settings: Settings) -> FastAPI:
    if settings.component == GATEWAY:
        from gekko.gateway.app import build_gateway_app

        return build_gateway_app(settings)
    from gekko.services.base import build_service_app

    module = importlib.import_module(f"gekko.services.{settings.component}")
    return build_service_app(
        settings.component,
        settings,
        module.router,
        start=getattr(module, "start", None),
        stop=getattr(module, "stop", None),
    )
