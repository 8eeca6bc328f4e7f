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
    app = build_service_app(
        settings.component,
        settings,
        getattr(module, "ROUTERS", (module.router,)),
        module.ACCESS,
        start=getattr(module, "start", None),
        stop=getattr(module, "stop", None),
        health_details=getattr(module, "health_details", None),
    )
    # A service with settings of its own checks them here, before anything binds a port
    # (raising ConfigError, which `gekko serve` reports like any configuration error).
    configure = getattr(module, "configure", None)
    if configure is not None:
        configure(app)
    return app
