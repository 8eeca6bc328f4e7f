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
    volumes = [m["Name"] for m in attrs["Mounts"] if m["Type"] == "volume"]
    assert volumes == [f"{name}-data"]


def test_app_image_is_multi_stage_non_root_with_a_healthcheck(engine):
    image = containers_of(engine, "gateway")[0].image
    config = image.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][-1] == "healthcheck"
    # The builder stage's wheelhouse stays behind; only the virtualenv and the signal model
    # trained in its own stage reach the runtime image.
    output = engine.containers.run(
        image,
        entrypoint=["/bin/sh", "-c"],
        command=[
            "test ! -e /wheels && test -x /opt/gekko/bin/gekko"
            ' && test -r "$GEKKO_SIGNAL_MODEL_PATH" && id -u'
        ],
        network_mode="host",
        remove=True,
    )
    assert output.decode().strip() == "10001"


def test_release_is_recorded_with_the_running_image(engine):
    state = json.loads(RELEASES.read_text())
    current = state["current"]
    assert current["id"].startswith("r-")
    running = containers_of(engine, "gateway")[0].image.id
    assert current["images"]["app"].endswith("@" + running)
    assert set(current["config_checksums"]) >= {"app.env", "postgres", "redis"}
