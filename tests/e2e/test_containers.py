"""The containers run as the deployment promises: limits, health, hardening, release record."""

import json
from pathlib import Path

import docker
import pytest
import yaml

from .conftest import REPO, SERVICES

APP_SERVICES = ["gateway", *SERVICES]
RELEASES = Path("/var/lib/gekko/releases.json")
DEFAULTS = yaml.safe_load((REPO / "roles/common/defaults/main.yml").read_text())
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def memory_limit(service: str) -> int:
    """The catalogue's memory limit of a service in bytes (gekko_container_memory if unset)."""
    spec = next((s for s in DEFAULTS["gekko_services"] if s["name"] == service), {})
    size = str(spec.get("memory", DEFAULTS["gekko_container_memory"])).lower()
    return int(size[:-1]) * _UNITS[size[-1]] if size[-1] in _UNITS else int(size)


@pytest.fixture(scope="module")
def engine():
    client = docker.from_env()
    yield client
    client.close()


def containers_of(engine, service):
    found = engine.containers.list(filters={"label": f"gekko.platform/service={service}"})
    assert found, f"no running container of {service}"
    return found


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_container_is_healthy_limited_and_hardened(engine, service):
    attrs = containers_of(engine, service)[0].attrs
    host = attrs["HostConfig"]
    assert attrs["State"]["Health"]["Status"] == "healthy"
    assert host["Memory"] == memory_limit(service)
    assert host["NetworkMode"] == "host"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert attrs["Config"]["User"] not in ("", "0", "root")


@pytest.mark.parametrize("name", ["gekko-postgres", "gekko-redis"])
def test_datastores_keep_their_data_in_named_volumes(engine, name):
    attrs = engine.containers.get(name).attrs
    assert attrs["State"]["Health"]["Status"] == "healthy"
    volumes = sorted(m["Name"] for m in attrs["Mounts"] if m["Type"] == "volume")
    # PostgreSQL archives its WAL into the backups' volume.
    expected = [f"{name}-data"] + (["gekko-backup"] if name == "gekko-postgres" else [])
    assert volumes == sorted(expected)


def run_in(engine, image, script: str) -> str:
    output = engine.containers.run(
        image, entrypoint=["/bin/sh", "-c"], command=[script], network_mode="host", remove=True
    )
    return output.decode().strip()


HAS_TORCH = "/opt/gekko/bin/python -c 'import torch' 2>/dev/null && echo torch || echo no-torch"


def test_slim_image_runs_the_gateway_and_services_without_torch(engine):
    images = {
        containers_of(engine, s)[0].image.id for s in ["gateway", *SERVICES] if s != "signals"
    }
    assert len(images) == 1, "the gateway and the six domain services share one image"
    image = engine.images.get(images.pop())
    assert image.attrs["Config"]["User"] == "10001:10001"
    assert image.attrs["Config"]["Healthcheck"]["Test"] == ["CMD", "gekko-healthcheck"]
    # Docker's check runs on the standard library alone (-I -S), not through the gekko package.
    shebang = run_in(engine, image, "head -n1 /opt/gekko/bin/gekko-healthcheck")
    assert shebang == "#!/opt/gekko/bin/python3 -IS"
    # The wheelhouse was only mounted (on /mnt) while the runtime was installed: none of it, nor
    # the install script, is in a layer; the virtualenv is.
    installed = 'test -z "$(ls -A /mnt)" && test -x /opt/gekko/bin/gekko && id -u'
    assert run_in(engine, image, installed) == "10001"
    assert run_in(engine, image, HAS_TORCH) == "no-torch"


def test_signals_image_has_torch_and_the_trained_model(engine):
    image = containers_of(engine, "signals")[0].image
    assert image.attrs["Config"]["User"] == "10001:10001"
    assert run_in(engine, image, HAS_TORCH) == "torch"
    assert run_in(engine, image, 'test -r "$GEKKO_SIGNAL_MODEL_PATH" && echo model') == "model"


# Run as the containers run (read-only root, nothing can be cached): modules imported from a .py
# file whose bytecode is not in the image, i.e. compiled again on every start. (torch.ops and
# torch.classes are objects with a relative __file__, not files.)
COLD_IMPORTS = """/opt/gekko/bin/python -c '
import importlib.util, os, sys
import MODULES
files = {n: getattr(m, "__file__", None) or "" for n, m in list(sys.modules.items())}
cold = [n for n, f in files.items()
        if f.startswith("/") and f.endswith(".py")
        and not os.path.exists(importlib.util.cache_from_source(f))]
print(len(sys.modules), sorted(cold)[:20])'"""


@pytest.mark.parametrize(
    ("service", "modules"),
    [
        ("gateway", "gekko.cli, gekko.apps, gekko.gateway.app, uvicorn"),
        ("signals", "gekko.apps, gekko.services.signals, torch"),
    ],
)
def test_what_a_server_imports_is_compiled_in_its_image(engine, service, modules):
    image = containers_of(engine, service)[0].image
    output = engine.containers.run(
        image,
        entrypoint=["/bin/sh", "-c"],
        command=[COLD_IMPORTS.replace("MODULES", modules)],
        network_mode="none",
        read_only=True,
        tmpfs={"/tmp": ""},
        remove=True,
    )
    loaded, cold = output.decode().strip().splitlines()[-1].split(" ", 1)
    assert int(loaded) > 300
    assert cold == "[]", f"imported without bytecode in the image: {cold}"


def test_no_build_leftover_takes_disk(engine):
    # A build stage or a replaced tag would show up dangling (this engine is the platform's
    # own); a runtime's installer container (roles/app_image) holds the 850 MB it committed
    # until it is removed.
    assert engine.images.list(filters={"dangling": True}) == []
    assert engine.containers.list(all=True, filters={"name": "gekko-build-"}) == []


def test_release_is_recorded_with_the_running_image(engine):
    state = json.loads(RELEASES.read_text())
    current = state["current"]
    assert current["id"].startswith("r-")
    running = containers_of(engine, "gateway")[0].image.id
    assert current["images"]["app"].endswith("@" + running)
    signals = containers_of(engine, "signals")[0].image.id
    assert current["images"]["signals"].endswith("@" + signals)
    assert set(current["config_checksums"]) >= {"app.env", "postgres", "redis"}
