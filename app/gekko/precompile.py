"""Write the bytecode of everything a server imports, at image build time.

The containers run with a read-only root, so Python cannot cache bytecode there: without this,
every container start compiles its whole import graph again (about 1.5 s of CPU for a service,
2.5 s more for torch), and so does every health check for the CLI. Compiling only what is
imported keeps the images small (pip's full compile of torch adds 170 MB).

    python -m gekko.precompile        (in the image build, as the owner of the virtualenv)
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import gekko

# Imported at run time by name, not by the module graph.
DYNAMIC = (
    "sqlalchemy.dialects.postgresql.asyncpg",
    "alembic.runtime.migration",
    "alembic.ddl.postgresql",
)


def main() -> int:
    sys.dont_write_bytecode = False
    missing = []
    for module in pkgutil.walk_packages(gekko.__path__, "gekko."):
        if module.name.startswith("gekko.migrations."):
            continue  # alembic's scripts, run by alembic (DYNAMIC covers what they import)
        try:
            importlib.import_module(module.name)
        except ImportError as exc:  # the slim image has no torch: gekko.signals stays cold
            missing.append(f"{module.name} ({exc.name})")
    for name in DYNAMIC:
        importlib.import_module(name)

    import uvicorn

    async def asgi(scope, receive, send):  # pragma: no cover - never called
        raise NotImplementedError

    # uvicorn picks its HTTP protocol, lifespan and loop modules when it loads a config.
    uvicorn.Config(asgi, lifespan="on").load()
    print(f"gekko-precompile: done; not importable here: {', '.join(missing) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
