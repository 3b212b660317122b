#!/usr/bin/env python3
"""Prints the brokers a Kafka cluster lists in its metadata, one "ID HOST:PORT" per line.

Usage: brokers.py HOST:PORT [TIMEOUT_SECONDS]

Sends one Metadata request (version 4: the oldest Kafka 4.x answers) for no topics to the node
at HOST:PORT and exits 0 with the broker list, or 1 with the reason on stderr. stack.sh uses it
to decide that the cluster is ready (every node listed). Standard library only.
"""
import socket
import struct
import sys


def read_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        data += chunk
    return data


def metadata_brokers(host, port, timeout):
    client_id = b"recsys-stack"
    correlation_id = 0x72656373
    # Header v1: api_key=3 (Metadata), api_version=4, correlation_id, client_id.
    header = struct.pack(">hhih", 3, 4, correlation_id, len(client_id)) + client_id
    # Body v4: topics = [] (no topic: brokers only), allow_auto_topic_creation = false.
    body = struct.pack(">ib", 0, 0)
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", read_exact(sock, 4))
        payload = read_exact(sock, size)
    (got_id, _throttle, count) = struct.unpack_from(">iii", payload, 0)
    if got_id != correlation_id:
        raise ValueError("unexpected correlation id")
    offset = 12
    brokers = []
    for _ in range(count):
        (node_id, host_len) = struct.unpack_from(">ih", payload, offset)
        offset += 6
        broker_host = payload[offset:offset + host_len].decode()
        offset += host_len
        (broker_port, rack_len) = struct.unpack_from(">ih", payload, offset)
        offset += 6 + max(rack_len, 0)
        brokers.append((node_id, broker_host, broker_port))
    return sorted(brokers)


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    host, _, port = sys.argv[1].rpartition(":")
    timeout = float(sys.argv[2]) if len(sys.argv) == 3 else 3.0
    try:
        brokers = metadata_brokers(host, int(port), timeout)
    except (OSError, ValueError, struct.error) as error:
        print(f"{sys.argv[1]}: {error}", file=sys.stderr)
        return 1
    for node_id, broker_host, broker_port in brokers:
        print(f"{node_id} {broker_host}:{broker_port}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
