#!/usr/bin/env python3
"""A TCP stream that survives resets, to measure how long a gateway move interrupts it
(standard library only).

  stream.py server BIND PORT SECONDS
  stream.py client HOST PORT SECONDS

The client sends 1 KB every millisecond and reconnects at once when its connection is
reset or refused. The server prints "ready" once listening, then after SECONDS one JSON
line: bytes received, connections seen, the source addresses they came from, and the
longest gap between two receives (the interruption).
"""
import json
import socket
import sys
import threading
import time


def server(bind, port, seconds):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, port))
    listener.listen(16)
    listener.settimeout(0.2)
    lock = threading.Lock()
    state = {"bytes": 0, "connections": 0, "sources": [], "last": None, "gap": 0.0}
    deadline = time.monotonic() + seconds
    print("ready", flush=True)

    def receive(conn):
        conn.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            now = time.monotonic()
            with lock:
                if state["last"] is not None:
                    state["gap"] = max(state["gap"], now - state["last"])
                state["last"] = now
                state["bytes"] += len(data)
        conn.close()

    while time.monotonic() < deadline:
        try:
            conn, peer = listener.accept()
        except socket.timeout:
            continue
        with lock:
            state["connections"] += 1
            if peer[0] not in state["sources"]:
                state["sources"].append(peer[0])
        threading.Thread(target=receive, args=(conn,), daemon=True).start()
    time.sleep(0.3)
    with lock:
        del state["last"]
        print(json.dumps(state), flush=True)


def client(host, port, seconds):
    deadline = time.monotonic() + seconds
    chunk = b"x" * 1024
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as conn:
                conn.settimeout(1)
                while time.monotonic() < deadline:
                    conn.sendall(chunk)
                    time.sleep(0.001)
        except OSError:
            time.sleep(0.01)


def main():
    mode, address, port, seconds = sys.argv[1:5]
    (server if mode == "server" else client)(address, int(port), float(seconds))


if __name__ == "__main__":
    main()
