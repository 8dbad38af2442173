#!/usr/bin/env python3
"""Raw Ethernet frames for tenet's end-to-end tests (standard library only).

  frames.py send IFACE COUNT [--src MAC] [--dst MAC] [--size N] [--tag TAG] [--vlan VID]
  frames.py recv IFACE COUNT [--timeout S] [--tag TAG]
  frames.py sniff IFACE 0 [--timeout S]

Frames carry ethertype 0x88b5 (IEEE local experimental), a 4-byte tag, a 4-byte
sequence number and a payload derived from both, so a receiver can tell every frame
apart and check its bytes. `recv` prints "ready" once its socket is bound, then one
line per matching frame (hex), and exits after COUNT frames or the timeout. `sniff`
prints every frame the interface receives, of any kind (its first 256 bytes, hex),
until the timeout or SIGTERM.
"""
import argparse
import signal
import socket
import sys
import time

ETHERTYPE = 0x88B5


def mac(text):
    return bytes(int(x, 16) for x in text.split(":"))


def frame(src, dst, tag, seq, size, vlan=None):
    dot1q = b"" if vlan is None else b"\x81\x00" + vlan.to_bytes(2, "big")
    head = dst + src + dot1q + ETHERTYPE.to_bytes(2, "big") + tag.to_bytes(4, "big") + seq.to_bytes(4, "big")
    body = bytes((seq * 7 + i) & 0xFF for i in range(max(0, size - len(head))))
    return head + body


def send(args):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((args.iface, 0))
    src, dst = mac(args.src), mac(args.dst)
    for seq in range(args.count):
        s.send(frame(src, dst, args.tag, seq, args.size, args.vlan))
        if args.gap:
            time.sleep(args.gap)


def recv(args):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
    s.bind((args.iface, 0))
    s.settimeout(0.2)
    print("ready", flush=True)
    got = 0
    deadline = time.time() + args.timeout
    while got < args.count and time.time() < deadline:
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        if len(data) < 22 or int.from_bytes(data[14:18], "big") != args.tag:
            continue
        print(data.hex(), flush=True)
        got += 1


def sniff(args):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((args.iface, 0))
    s.settimeout(0.2)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        print(data[:256].hex(), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["send", "recv", "sniff"])
    p.add_argument("iface")
    p.add_argument("count", type=int)
    p.add_argument("--src", default="02:00:00:00:0a:01")
    p.add_argument("--dst", default="02:00:00:00:0b:01")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--tag", type=int, default=1)
    p.add_argument("--gap", type=float, default=0.0)
    p.add_argument("--vlan", type=int, default=None, help="send 802.1Q-tagged with this VID")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()
    {"send": send, "recv": recv, "sniff": sniff}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
