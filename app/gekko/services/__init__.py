"""Domain services: each module exposes `router` and the service builds via `build_service_app`."""
