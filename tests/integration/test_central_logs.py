"""Central logs with the role's own configuration and real rsyslog, as host processes.

gekko.platform.central_logs' templates are rendered by Ansible with the role's defaults and vars
(only ports, folders and names changed to temporary ones), checked with `rsyslogd -N1` and
`logrotate --debug`, then run: a store (through the role's container entrypoint, so logrotate
runs beside it) and two relays (hosts gw-1 and svc-1) on free loopback ports. Lines are sent to
the relays over UDP exactly as Docker's syslog driver formats them (rfc5424micro, APP-NAME = the
container's name). Nothing here needs Docker; rsyslog, rsyslog-relp and logrotate are Debian's.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gekko.correlation import correlation_id_var
from gekko.logs import JsonFormatter
from pki import write_key as _write_key

from .conftest import LOOPBACK, _wait_for, free_port, gekko_cmd

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/central_logs"
BIN = Path(sys.executable).parent
HOSTS = ("gw-1", "svc-1")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def rsyslog_installed() -> None:
    missing = [tool for tool in ("rsyslogd", "logrotate") if shutil.which(tool) is None]
    relp = subprocess.run(["dpkg", "-s", "rsyslog-relp"], capture_output=True).returncode == 0
    if missing or not relp:
        pytest.fail(
            "rsyslog with RELP and logrotate are needed (the log store's and relays' programs). "
            "Install them with: apt-get install -y rsyslog rsyslog-relp logrotate "
            "(with /usr/sbin/policy-rc.d exiting 101, so that no system rsyslogd starts)"
        )


def render(tmp_path: Path, outputs: dict[str, tuple[str, dict]]) -> None:
    """Render the role's templates (name -> (template, variables over the role's)) with Ansible,
    in one run: the role's and common's defaults and the role's vars, as a deploy sees them."""
    playbook = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "vars_files": [
                str(REPO / "roles/common/defaults/main.yml"),
                str(ROLE / "defaults/main.yml"),
                str(ROLE / "vars/main.yml"),
            ],
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [
                {
                    "name": f"Render {dest}",
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates" / template),
                        "dest": str(tmp_path / dest),
                        "mode": "0644",
                    },
                    # Task variables outrank the vars_files above, as an inventory would.
                    "vars": variables,
                }
                for dest, (template, variables) in outputs.items()
            ],
        }
    ]
    for dest in outputs:
        (tmp_path / dest).parent.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "render.yml"
    path.write_text(yaml.safe_dump(playbook))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_CACHE_PLUGIN="memory",
        GEKKO_REPORT_DIR=str(tmp_path / "reports"),
    )
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def check_config(path: Path) -> None:
    """What the role's `validate:` runs in the image: rsyslogd -N1."""
    run = subprocess.run(
        ["rsyslogd", "-N1", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stdout + run.stderr


class Process:
    """A process in its own session, stopped with SIGTERM (then SIGKILL) with its children."""

    def __init__(self, argv: list[str], log_file: Path, env: dict[str, str] | None = None):
        self.argv, self.log_file, self.env = argv, log_file, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, **(self.env or {})),
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        # What the store's entrypoint left behind (logrotate's sleep).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Relay:
    host: str
    port: int
    queue: Path
    process: Process

    def start(self) -> None:
        """Start it and wait until it listens: a datagram sent before is gone (UDP)."""
        self.process.start()
        bound = f"{socket.inet_aton(LOOPBACK)[::-1].hex().upper()}:{self.port:04X}"
        _wait_for(
            lambda: any(
                line.split()[1] == bound
                for line in Path("/proc/net/udp").read_text().splitlines()[1:]
            ),
            15,
            f"the relay of {self.host} on UDP {self.port}",
            self.process.log_file,
        )

    def send(self, container: str, message: str, stream: str = "stderr") -> None:
        send_as_docker(self.port, container, message, stream)


@dataclass
class Plant:
    root: Path
    store_port: int
    data: Path
    conf: Path
    store: Process
    relays: dict[str, Relay] = field(default_factory=dict)

    def lines(self, host: str, container: str) -> list[str]:
        files = sorted((self.data / host).glob(f"{container}.log*"), reverse=True)
        return [line for f in files if f.suffix != ".gz" for line in f.read_text().splitlines()]

    def wait_for_lines(self, host: str, container: str, expected: list[str], timeout=30) -> None:
        def arrived() -> bool:
            have = {line.split(" ", 3)[3] for line in self.lines(host, container)}
            return set(expected) <= have

        _wait_for(arrived, timeout, f"{len(expected)} lines in {host}/{container}.log")


def send_as_docker(port: int, container: str, message: str, stream: str = "stderr") -> None:
    """One datagram as dockerd's syslog driver sends it with syslog-format=rfc5424micro and
    tag={{.Name}}: facility daemon, info for stdout and err for stderr, dockerd's pid."""
    priority = 3 * 8 + (6 if stream == "stdout" else 3)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    datagram = f"<{priority}>1 {now} docker-host {container} 4242 {container} - {message}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram.encode(), (LOOPBACK, port))


def queued(relay: Relay, message: str) -> bool:
    """Whether the relay's queue files hold this line."""
    return any(message.encode() in f.read_bytes() for f in relay.queue.glob("store_1.0*"))


def relay_vars(host: str, udp_port: int, queue: Path, store_port: int, **extra) -> dict:
    return {
        "gekko_log_host": host,
        "gekko_log_relay_port": udp_port,
        "gekko_log_store_addresses": [LOOPBACK],
        "gekko_log_store_port": store_port,
        "_gekko_log_relay_queue_dir": str(queue),
        # Quick retries.
        "gekko_log_relay_retry_interval": 1,
        "gekko_log_relay_retry_interval_max": 2,
        **extra,
    }


def store_vars(data: Path, pidfile: Path, store_port: int, **extra) -> dict:
    return {
        "gekko_bind_address": LOOPBACK,
        "gekko_log_store_port": store_port,
        "_gekko_log_store_data_dir": str(data),
        "_gekko_log_store_pidfile": str(pidfile),
        **extra,
    }


def store_process(conf: Path, data: Path, pidfile: Path, log_file: Path) -> Process:
    """The store as its container runs it: the role's entrypoint (rsyslogd and a logrotate loop)."""
    return Process(
        ["sh", str(conf / "entrypoint.sh")],
        log_file,
        env={
            "GEKKO_LOG_STORE_CONF_DIR": str(conf),
            "GEKKO_LOG_STORE_PIDFILE": str(pidfile),
            "GEKKO_LOGROTATE_STATE": str(data / ".logrotate.status"),
            "GEKKO_LOGROTATE_INTERVAL": "3600",
        },
    )


def relay_process(conf: Path, log_file: Path) -> Process:
    # The relay container's command (roles/central_logs/vars/main.yml).
    return Process(["rsyslogd", "-n", "-iNONE", "-f", str(conf)], log_file)


@pytest.fixture(scope="module")
def plant(tmp_path_factory) -> Iterator[Plant]:
    root = tmp_path_factory.mktemp("central-logs")
    store_port = free_port()
    data, conf, pidfile = root / "store-data", root / "store", root / "store.pid"
    data.mkdir()
    outputs = {
        "store/rsyslog.conf": ("store.rsyslog.conf.j2", store_vars(data, pidfile, store_port)),
        "store/logrotate.conf": ("logrotate.conf.j2", store_vars(data, pidfile, store_port)),
    }
    relays = {}
    for host in HOSTS:
        queue = root / f"relay-{host}-queue"
        queue.mkdir()
        udp = free_udp_port()
        outputs[f"relay-{host}/rsyslog.conf"] = (
            "relay.rsyslog.conf.j2",
            relay_vars(host, udp, queue, store_port),
        )
        process = relay_process(root / f"relay-{host}/rsyslog.conf", root / f"relay-{host}.out")
        relays[host] = Relay(host, udp, queue, process)
    render(root, outputs)
    shutil.copy(ROLE / "files/log-store-entrypoint.sh", conf / "entrypoint.sh")
    store = store_process(conf, data, pidfile, root / "store.out")
    plant = Plant(root, store_port, data, conf, store, relays)
    try:
        store.start()
        for relay in relays.values():
            relay.start()
        _wait_for(pidfile.exists, 15, "the store's rsyslogd", root / "store.out")
        yield plant
    finally:
        for relay in relays.values():
            relay.process.stop()
        store.stop()


def test_the_rendered_configurations_pass_rsyslogd_and_logrotate_checks(plant):
    check_config(plant.conf / "rsyslog.conf")
    for host in HOSTS:
        check_config(plant.root / f"relay-{host}/rsyslog.conf")
    run = subprocess.run(
        ["logrotate", "--debug", "--state", str(plant.root / "check.status"),
         str(plant.conf / "logrotate.conf")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    rotation = (plant.conf / "logrotate.conf").read_text()
    assert "rotate 7" in rotation and "maxage 7" in rotation and "delaycompress" in rotation


def test_each_line_lands_unchanged_under_its_host_and_container(plant):
    gateway = ['{"msg":"gateway up","n":1}', "plain  text,  two  spaces , trailing "]
    trading = ['{"msg":"trading up","quote":"caf\u00e9 \\"x\\""}']
    for message in gateway:
        plant.relays["gw-1"].send("gekko-gateway", message)
    for message in trading:
        plant.relays["svc-1"].send("gekko-trading", message, stream="stdout")
    plant.wait_for_lines("gw-1", "gekko-gateway", gateway)
    plant.wait_for_lines("svc-1", "gekko-trading", trading)
    for line in plant.lines("gw-1", "gekko-gateway"):
        stamp, host, container, message = line.split(" ", 3)
        assert datetime.datetime.fromisoformat(stamp).tzinfo is not None
        assert (host, container) == ("gw-1", "gekko-gateway")
        assert message in gateway
    mode = (plant.data / "gw-1" / "gekko-gateway.log").stat().st_mode & 0o777
    assert mode == 0o640
    # A container name cannot climb out of its host's folder.
    plant.relays["gw-1"].send("../../escape", "x")
    plant.relays["gw-1"].send("gekko-marker", "after the escape attempt")
    plant.wait_for_lines("gw-1", "gekko-marker", ["after the escape attempt"])
    assert not list(plant.root.glob("escape.log")) and not list(plant.data.glob("escape.log"))


def test_lines_sent_while_the_store_is_down_wait_on_disk_and_all_arrive(plant):
    relay = plant.relays["gw-1"]
    plant.store.stop()
    sent = [f'{{"msg":"during the outage","n":{n}}}' for n in range(400)]
    for n, message in enumerate(sent):
        relay.send("gekko-users", message)
        if n % 50 == 49:
            time.sleep(0.02)  # Docker sends as lines come; the test just should not flood UDP
    _wait_for(lambda: queued(relay, sent[-1]), 15, "the relay's queue on disk")
    plant.store.start()
    plant.wait_for_lines("gw-1", "gekko-users", sent, timeout=45)
    got = [line.split(" ", 3)[3] for line in plant.lines("gw-1", "gekko-users")]
    # RELP delivers at least once: the line a vanished store had not acknowledged may come twice.
    assert len(got) - len(set(got)) <= 1


def test_a_relay_restarted_during_an_outage_keeps_its_queue(plant):
    relay = plant.relays["svc-1"]
    plant.store.stop()
    # The first line after the store went away may be lost with the relay's RELP session (the
    # runbook's caveat); what the relay queued after it noticed the outage survives a restart.
    output = plant.root / "relay-svc-1.out"
    before = output.stat().st_size
    relay.send("gekko-portfolio", "probe")
    _wait_for(
        lambda: "suspended" in output.read_text()[before:], 20, "the relay to notice the outage"
    )
    sent = [f'{{"msg":"queued","n":{n}}}' for n in range(150)]
    for message in sent:
        relay.send("gekko-portfolio", message)
    _wait_for(lambda: queued(relay, sent[-1]), 15, "the relay's queue on disk")
    relay.process.stop()
    relay.start()
    plant.store.start()
    plant.wait_for_lines("svc-1", "gekko-portfolio", sent, timeout=45)


def test_rotation_renames_compresses_and_the_store_writes_on(plant):
    """logrotate as the store's loop runs it, forced (a day passing): rsyslog reopens its files
    on the HUP; the second rotation compresses the first."""
    state = plant.data / ".logrotate.status"
    _wait_for(state.exists, 10, "the entrypoint's first logrotate run")
    relay = plant.relays["gw-1"]

    def rotate() -> None:
        run = subprocess.run(
            ["logrotate", "--force", "--state", str(state), str(plant.conf / "logrotate.conf")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr

    relay.send("gekko-social", "day 1")
    plant.wait_for_lines("gw-1", "gekko-social", ["day 1"])
    rotate()
    relay.send("gekko-social", "day 2")
    plant.wait_for_lines("gw-1", "gekko-social", ["day 2"])
    rotate()
    relay.send("gekko-social", "day 3")
    plant.wait_for_lines("gw-1", "gekko-social", ["day 3"])
    folder = plant.data / "gw-1"
    assert (folder / "gekko-social.log").read_text().rstrip().endswith("day 3")
    assert (folder / "gekko-social.log.1").read_text().rstrip().endswith("day 2")
    assert (folder / "gekko-social.log.2.gz").exists()


def test_gekko_logs_follows_a_request_across_services_in_time_order(plant):
    def app_line(service: str, message: str, correlation_id: str) -> str:
        """A line as the app writes it (gekko.logs), inside a request with this id."""
        token = correlation_id_var.set(correlation_id)
        try:
            record = logging.LogRecord(f"gekko.{service}", logging.INFO, "", 0, message, (), None)
            return JsonFormatter(service, f"{service}-1").format(record)
        finally:
            correlation_id_var.reset(token)

    request = "req-central-logs-1"
    steps = [
        ("gw-1", "gekko-gateway", "gateway", "proxying POST /api/v1/orders"),
        ("svc-1", "gekko-trading", "trading", "order accepted"),
        ("gw-1", "gekko-gateway", "gateway", "answered 201"),
    ]
    for host, container, service, message in steps:
        plant.relays[host].send(container, app_line(service, "noise", "req-other"))
        plant.relays[host].send(container, app_line(service, message, request))
        time.sleep(0.01)  # one after the other, as the request goes
    _wait_for(
        lambda: sum(request in line for h in HOSTS for c in ("gekko-gateway", "gekko-trading")
                    for line in plant.lines(h, c)) == 3,
        30,
        "the request's three lines in the store",
    )  # fmt: skip
    run = subprocess.run(
        gekko_cmd("logs", "--correlation-id", request, "--dir", str(plant.data)),
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    printed = [line.split(" ", 3) for line in run.stdout.splitlines()]
    assert [
        (host, container, json.loads(message)["msg"]) for _at, host, container, message in printed
    ] == [(host, container, message) for host, container, _service, message in steps]
    assert all(json.loads(m)["correlation_id"] == request for *_x, m in printed)


# ---------------------------------------------------------------- RELP over TLS


def issue_certificates(root: Path, names: list[str]) -> None:
    """A CA and, per name, <root>/<name>/{ca.crt,tls.crt,tls.key} named as gekko.platform.tls
    names a host's certificate: DNS:<inventory name>, IP:127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "central logs test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    for name in names:
        folder = root / name
        folder.mkdir(parents=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"log@{name}")])
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(folder / "tls.key", key)


def test_relp_over_tls_admits_only_the_hosts_the_inventory_names(tmp_path):
    """With gekko_tls_enabled: TLS 1.3, certificates from the CA, each side checking the other's
    name; a host the store does not know is refused even with a certificate from the same CA."""
    issue_certificates(tmp_path / "tls", ["logs-1", "gw-1", "intruder"])
    store_port = free_port()
    data, pidfile = tmp_path / "data", tmp_path / "store.pid"
    data.mkdir()
    tls = {"gekko_tls_enabled": True}
    outputs = {
        "store/rsyslog.conf": (
            "store.rsyslog.conf.j2",
            store_vars(
                data, pidfile, store_port, **tls,
                _gekko_log_tls_dir=str(tmp_path / "tls/logs-1"),
                _gekko_log_store_peers=["gw-1", "svc-1"],
            ),
        ),
        "store/logrotate.conf": ("logrotate.conf.j2", store_vars(data, pidfile, store_port)),
    }  # fmt: skip
    relays = {}
    for host in ("gw-1", "intruder"):
        queue = tmp_path / f"queue-{host}"
        queue.mkdir()
        udp = free_udp_port()
        outputs[f"relay-{host}.conf"] = (
            "relay.rsyslog.conf.j2",
            relay_vars(
                host, udp, queue, store_port, **tls,
                _gekko_log_tls_dir=str(tmp_path / f"tls/{host}"),
                _gekko_log_relay_peers=["logs-1"],
            ),
        )  # fmt: skip
        relays[host] = Relay(
            host,
            udp,
            queue,
            relay_process(tmp_path / f"relay-{host}.conf", tmp_path / f"{host}.out"),
        )
    render(tmp_path, outputs)
    config = (tmp_path / "store/rsyslog.conf").read_text()
    assert 'tls="on"' in config and "MinProtocol=TLSv1.3" in config
    for path in (tmp_path / "store/rsyslog.conf", *(tmp_path.glob("relay-*.conf"))):
        check_config(path)
    shutil.copy(ROLE / "files/log-store-entrypoint.sh", tmp_path / "store/entrypoint.sh")
    store = store_process(tmp_path / "store", data, pidfile, tmp_path / "store.out")
    try:
        store.start()
        for relay in relays.values():
            relay.start()
        _wait_for(pidfile.exists, 15, "the store's rsyslogd", tmp_path / "store.out")
        relays["intruder"].send("gekko-evil", "let me in")
        relays["gw-1"].send("gekko-gateway", "over TLS")
        _wait_for(
            lambda: (data / "gw-1/gekko-gateway.log").exists(), 30, "the line over TLS",
            tmp_path / "store.out",
        )  # fmt: skip
        assert (data / "gw-1/gekko-gateway.log").read_text().rstrip().endswith(" over TLS")
        refusal = "authentication error 'no permited name found', peer is 'DNSname: intruder"
        _wait_for(
            lambda: refusal in (tmp_path / "store.out").read_text(),
            30,
            "the store to refuse the intruder",
            tmp_path / "store.out",
        )
        assert not (data / "intruder").exists()
    finally:
        for relay in relays.values():
            relay.process.stop()
        store.stop()
