#!/usr/bin/env python3
"""A lab of real hosts on this machine, for deploys over SSH (make lab / make lab-down).

Each host has its own network namespace with one address on the lab bridge, its own mount
namespace (its own /etc/gekko, /var/lib/gekko, /var/log, /etc/docker, /var/lib/docker, /run and
/tmp), and an SSH server. Ansible reaches the hosts only over SSH, from the lab's controller
namespace, as the `gekko-lab` user with a key generated here and sudo for `become`. The
deploy's docker_engine role starts each host's own Docker engine (its data root, exec root and
socket live in the host's own directories).

The bridge lives in a namespace of its own and nothing has a route out: the lab's addresses exist
only on interfaces inside namespaces the lab created, so nothing outside the machine can reach it
and the lab reaches nothing. Everything made is recorded in STATE and removed by those records.

    lab.py up | down | status | cpu-weight WEIGHT [--join PID] | controller -- COMMAND
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("GEKKO_LAB_ROOT", "/var/lib/gekko-lab"))
STATE = ROOT / "state.json"
PREFIX = "gekko-lab-"
SUBNET = "10.77.0"
CONTROLLER = {"name": "controller", "address": f"{SUBNET}.1"}
# Shaped like inventories/prod: a datastores host, two services hosts, a gateway host, and a host
# of its own for monitoring (Prometheus, Alertmanager) and the central log store.
HOSTS = [
    {"name": "lab-db-1", "address": f"{SUBNET}.10", "groups": ["datastores"]},
    {"name": "lab-svc-1", "address": f"{SUBNET}.11", "groups": ["services"]},
    {"name": "lab-svc-2", "address": f"{SUBNET}.12", "groups": ["services"]},
    {"name": "lab-gw-1", "address": f"{SUBNET}.13", "groups": ["gateway"]},
    {"name": "lab-mon-1", "address": f"{SUBNET}.14", "groups": ["monitoring", "logs"]},
]
USER = "gekko-lab"
# Bind-mounted from the host's own directory over the machine's, inside its mount namespace.
PRIVATE_DIRS = [
    "/etc/gekko",
    "/var/lib/gekko",
    "/var/log",
    "/etc/docker",
    "/var/lib/docker",
    "/etc/sysctl.d",
]
# What a managed host needs before a deploy (the docker_engine role would install the last three).
PACKAGES = [
    "openssh-server",
    "sudo",
    "iproute2",
    "python3-psutil",
    "python3-cryptography",
    "rsync",
    "docker.io",
    "python3-docker",
    "python3-requests",
]


def sh(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)


def netns(name: str) -> str:
    return PREFIX + name


def load_state() -> dict | None:
    return json.loads(STATE.read_text()) if STATE.exists() else None


def save_state(state: dict) -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state, indent=2))


# ---------------------------------------------------------------------------------- set up


def install_packages() -> None:
    missing = [
        p
        for p in PACKAGES
        if sh("dpkg-query", "-W", "-f=${Status}", p, check=False).stdout != "install ok installed"
    ]
    if not missing:
        return
    # No init system starts the packages' own servers (policy-rc.d), the lab starts its own.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh("apt-get", "update", "-qq", env=env)
        sh("apt-get", "install", "-y", "-qq", *missing, env=env)
    finally:
        if created:
            policy.unlink()


def make_user(state: dict) -> None:
    home = ROOT / "home"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        sh("useradd", "--system", "--home-dir", str(home), "--shell", "/bin/bash", USER)
        state["created_user"] = True
    # No password, but not locked either ('!' would make sshd refuse the key without PAM).
    sh("usermod", "-p", "*", USER)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    key = ROOT / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True, exist_ok=True)
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gekko-lab", "-f", str(key))
    (ssh_dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    sh("chown", "-R", f"{USER}:", str(home))
    home.chmod(0o750)
    ssh_dir.chmod(0o700)
    sudoers = Path("/etc/sudoers.d/gekko-lab")
    sudoers.write_text(f"{USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    state["sudoers"] = str(sudoers)


def make_network(state: dict) -> None:
    switch = netns("switch")
    sh("ip", "netns", "add", switch)
    state["namespaces"].append(switch)
    sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", switch, "link", "set", "br0", "up")
    for member in [CONTROLLER, *HOSTS]:
        ns = netns(member["name"])
        sh("ip", "netns", "add", ns)
        state["namespaces"].append(ns)
        port = "p-" + member["address"].rsplit(".", 1)[1]
        sh("ip", "link", "add", port, "netns", switch, "type", "veth", "peer", "eth0", "netns", ns)
        sh("ip", "-n", switch, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", member["address"] + "/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        member_state = {"namespace": ns, "address": member["address"], "port": port}
        state["members"][member["name"]] = member_state


SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {root}/ssh_host_ed25519_key
PidFile /run/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
AllowUsers {user}
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
"""


def host_init_script(root: Path, host: dict) -> str:
    """Run inside the host's namespaces: its own directories, then sshd in the foreground."""
    mounts = []
    for target in PRIVATE_DIRS:
        source = root / target.strip("/").replace("/", "-")
        source.mkdir(parents=True, exist_ok=True)
        Path(target).mkdir(parents=True, exist_ok=True)
        mounts.append(f"mount --bind {source} {target}")
    return " && ".join(
        [
            *mounts,
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            "mount -t tmpfs -o mode=1777 tmpfs /tmp",
            "mkdir -p /run/sshd /var/log/apt",
            f"hostname {host['name']} 2>/dev/null || true",
            f"exec /usr/sbin/sshd -D -e -f {root}/sshd_config",
        ]
    )


def start_host(state: dict, host: dict) -> None:
    root = ROOT / "hosts" / host["name"]
    root.mkdir(parents=True, exist_ok=True)
    key = root / "ssh_host_ed25519_key"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    (root / "sshd_config").write_text(
        SSHD_CONFIG.format(address=host["address"], root=root, user=USER)
    )
    log = (root / "host.log").open("ab")
    # unshare --uts too: each host has its own hostname.
    process = subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{netns(host['name'])}",
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            host_init_script(root, host),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    state["members"][host["name"]].update(pid=process.pid, root=str(root))


def lab_secrets() -> dict[str, str]:
    """The lab's platform secrets, made once per lab (0600) and exported to controller commands,
    as a CI job exports an environment's (the lab's inventory reads them: gekko_secrets_source
    env)."""
    path = ROOT / "secrets.json"
    if not path.exists():
        names = [
            "GEKKO_POSTGRES_PASSWORD",
            "GEKKO_POSTGRES_APP_PASSWORD",
            "GEKKO_REDIS_PASSWORD",
            "GEKKO_ADMIN_PASSWORD",
            "GEKKO_MONITOR_PASSWORD",
            "GEKKO_BACKUP_CIPHER_PASS",
            "GEKKO_DATA_KEYS",
        ]
        values = {name: secrets.token_urlsafe(36) for name in names}
        values["GEKKO_ADMIN_TOTP_SECRET"] = base64.b32encode(secrets.token_bytes(20)).decode()
        # The access-token signing key, as an operator makes one (PEM, Ed25519).
        values["GEKKO_TOKEN_SIGNING_KEYS"] = subprocess.run(
            ["openssl", "genpkey", "-algorithm", "ed25519"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        path.touch(mode=0o600)
        path.write_text(json.dumps(values))
    return json.loads(path.read_text())


def in_namespace(name: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/var/run/netns/{netns(name)}", *argv], **kwargs)


def wait_for_ssh(host: dict, timeout: float = 30) -> None:
    probe = (
        f"import socket,sys;socket.create_connection(('{host['address']}', 22), timeout=1).close()"
    )
    deadline = time.monotonic() + timeout
    while True:
        done = in_namespace(CONTROLLER["name"], [sys.executable, "-c", probe], capture_output=True)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            log = Path(ROOT / "hosts" / host["name"] / "host.log").read_text()[-2000:]
            raise SystemExit(f"lab: {host['name']} does not answer on port 22:\n{log}")
        time.sleep(0.3)


def write_inventory() -> Path:
    """An inventory shaped like inventories/prod, for the lab's addresses."""
    directory = ROOT / "inventory"
    directory.mkdir(parents=True, exist_ok=True)
    # The lab's settings live in the repository, next to this script.
    group_vars = directory / "group_vars"
    if group_vars.is_symlink() or group_vars.exists():
        group_vars.unlink()
    group_vars.symlink_to(Path(__file__).resolve().parent / "group_vars")
    groups: dict[str, dict] = {}
    for host in HOSTS:
        for group in host["groups"]:
            groups.setdefault(group, {"hosts": {}})["hosts"][host["name"]] = {
                "ansible_host": host["address"],
                "gekko_bind_address": host["address"],
            }
    inventory = {
        "gekko": {
            "children": groups,
            "vars": {
                "ansible_user": USER,
                "ansible_become": True,
                "ansible_ssh_private_key_file": str(ROOT / "ssh" / "id_ed25519"),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={ROOT / 'ssh' / 'known_hosts'} "
                    "-o StrictHostKeyChecking=accept-new"
                ),
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        }
    }
    (directory / "hosts.yml").write_text(json.dumps(inventory, indent=2) + "\n")
    return directory


def up() -> None:
    if load_state():
        print("lab: removing the lab left by an earlier run")
        down()
    install_packages()
    state: dict = {"namespaces": [], "members": {}, "created_user": False}
    save_state(state)
    try:
        make_user(state)
        make_network(state)
        for host in HOSTS:
            start_host(state, host)
        save_state(state)
        for host in HOSTS:
            wait_for_ssh(host)
        (ROOT / "ssh" / "known_hosts").unlink(missing_ok=True)
    except BaseException:
        save_state(state)
        down()
        raise
    inventory = write_inventory()
    save_state(state)
    print(f"lab: {len(HOSTS)} hosts up; inventory {inventory}/hosts.yml")
    for host in HOSTS:
        print(f"  {host['name']:10} {host['address']:12} {', '.join(host['groups'])}")


# ---------------------------------------------------------------------------------- tear down


def processes_in(namespace: str) -> list[int]:
    """Every process in the lab's network namespace `namespace` (sshd, dockerd, containers)."""
    found = sh("ip", "netns", "pids", namespace, check=False)
    return [int(pid) for pid in found.stdout.split()] if found.returncode == 0 else []


def down() -> None:
    state = load_state()
    if state is None:
        print("lab: nothing to remove")
        return
    # Every process in a lab namespace: the hosts' sshd and what their sessions started
    # (dockerd, containerd, the containers), first politely, then not.
    namespaces = state.get("namespaces", [])
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [pid for ns in namespaces for pid in processes_in(ns)]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (20 if sig == signal.SIGTERM else 5)
        while any(processes_in(ns) for ns in namespaces) and time.monotonic() < deadline:
            time.sleep(0.3)
    for ns in namespaces:
        sh("ip", "netns", "delete", ns, check=False)
    if state.get("sudoers"):
        Path(state["sudoers"]).unlink(missing_ok=True)
    if state.get("created_user"):
        sh("userdel", USER, check=False)
    shutil.rmtree(ROOT / "hosts", ignore_errors=True)
    shutil.rmtree(ROOT / "inventory", ignore_errors=True)
    shutil.rmtree(ROOT / "facts", ignore_errors=True)
    (ROOT / "secrets.json").unlink(missing_ok=True)
    # The anchors name rows of the lab's audit log, gone with its hosts' data.
    (ROOT / "audit-anchors").unlink(missing_ok=True)
    STATE.unlink()
    remove_cpu_group()
    print("lab: removed")


# The lab's CPU group: its hosts' processes (made by `up` from a process in the group) and, by
# the hosts' engines' `cgroup-parent` (lab/group_vars), their containers. Its weight against the
# machine's other groups is what `cpu-weight` sets: `make test` makes the lab at the lowest weight
# beside the late e2e tests (tests/lab/prepare.py), then gives it the normal weight back.
CPU_GROUP = "gekko-lab"
NORMAL_WEIGHT = 100  # cgroup v2's default cpu.weight; v1's cpu.shares default is 1024


def _cpu_group() -> tuple[Path, str, int] | None:
    """The lab's CPU group directory, its weight file and how a weight of 100 is written there
    (cgroup v1's cpu.shares or v2's cpu.weight); None where the machine has no CPU controller."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.shares").exists():
        return v1 / CPU_GROUP, "cpu.shares", 1024
    v2 = Path("/sys/fs/cgroup")
    controllers = v2 / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        with contextlib.suppress(OSError):  # already on, or not ours to turn on
            (v2 / "cgroup.subtree_control").write_text("+cpu")
        return v2 / CPU_GROUP, "cpu.weight", 100
    return None


def join_cpu_group(pid: int, weight: int) -> bool:
    """Move process `pid` (what it starts follows) into the lab's CPU group at `weight` (1 to
    10000, 100 normal); False where the machine has no CPU controller to do it with."""
    found = _cpu_group()
    if found is None:
        return False
    group, _, _ = found
    group.mkdir(exist_ok=True)
    set_cpu_weight(weight)
    (group / "cgroup.procs").write_text(str(pid))
    return True


def set_cpu_weight(weight: int) -> bool:
    found = _cpu_group()
    if found is None or not found[0].is_dir():
        return False
    group, name, normal = found
    (group / name).write_text(str(max(2, weight * normal // NORMAL_WEIGHT)))
    return True


def remove_cpu_group() -> None:
    """The group, and what the hosts' engines made under its name in every hierarchy (their
    processes are gone by now)."""
    cgroups = Path("/sys/fs/cgroup")
    for group in [cgroups / CPU_GROUP, *cgroups.glob(f"*/{CPU_GROUP}")]:
        for directory in sorted(group.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()


def status() -> int:
    state = load_state()
    if state is None:
        print("lab: not running")
        return 1
    for name, member in state["members"].items():
        alive = bool(processes_in(member["namespace"]))
        print(f"{name:10} {member['address']:12} {'up' if alive else 'DOWN'}")
    return 0


def _stopped(signum: int, _frame: object) -> None:
    raise SystemExit(f"lab: stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="create the hosts (removes a leftover lab first)")
    sub.add_parser("down", help="remove everything the lab recorded")
    sub.add_parser("status", help="list the hosts")
    weight = sub.add_parser("cpu-weight", help="set the lab's CPU weight (1 to 10000, 100 normal)")
    weight.add_argument("weight", type=int, choices=range(1, 10001), metavar="WEIGHT")
    weight.add_argument("--join", type=int, metavar="PID", help="make the group, move PID into it")
    run = sub.add_parser("controller", help="run a command in the controller's namespace")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    # Stopped with SIGTERM (tests/lab/prepare.py stopping), `up` removes what it made so far.
    signal.signal(signal.SIGTERM, _stopped)
    if os.geteuid() != 0:
        print("lab: run as root (namespaces, bridges, sshd)", file=sys.stderr)
        return 2
    if args.command == "up":
        up()
    elif args.command == "down":
        down()
    elif args.command == "status":
        return status()
    elif args.command == "cpu-weight":
        if args.join is not None:
            if not join_cpu_group(args.join, args.weight):
                print("lab: no CPU controller here: no group made", file=sys.stderr)
                return 1
        elif not set_cpu_weight(args.weight):
            print("lab: no CPU group (made by tests/lab/prepare.py --beside)", file=sys.stderr)
            return 1
    else:
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        env = dict(os.environ, **lab_secrets())
        return in_namespace(CONTROLLER["name"], argv, env=env).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
