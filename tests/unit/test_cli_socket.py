"""Two instances can hold the same port during a handover (SO_REUSEPORT)."""

import socket

from gekko.cli import listening_socket


def test_a_second_instance_binds_the_same_port_while_the_first_listens():
    first = listening_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = listening_socket("127.0.0.1", port)
    try:
        assert second.getsockname()[1] == port
        client = socket.create_connection(("127.0.0.1", port), timeout=2)
        client.close()
    finally:
        first.close()
        second.close()


def test_a_port_held_without_reuseport_is_refused():
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen()
    try:
        try:
            listening_socket("127.0.0.1", plain.getsockname()[1]).close()
        except OSError:
            return
        raise AssertionError("binding a port held by a non-sharing listener must fail")
    finally:
        plain.close()
