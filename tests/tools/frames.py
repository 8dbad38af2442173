#!/usr/bin/env python3
"""Raw Ethernet frames for tenet's end-to-end tests (standard library only).

  frames.py send IFACE COUNT [--src MAC] [--dst MAC] [--size N] [--tag TAG] [--vlan VID]
  frames.py recv IFACE COUNT [--timeout S] [--tag TAG]
  frames.py sniff IFACE 0 [--timeout S]
  frames.py poison IFACE 0 --claim IP [--ask IP] [--src MAC] [--timeout S]

Frames carry ethertype 0x88b5 (IEEE local experimental), a 4-byte tag, a 4-byte
sequence number and a payload derived from both, so a receiver can tell every frame
apart and check its bytes. `recv` prints "ready" once its socket is bound, then one
line per matching frame (hex), and exits after COUNT frames or the timeout. `sniff`
prints every frame the interface receives, of any kind (its first 256 bytes, hex,
with the 802.1Q tag the kernel took off put back), until the timeout or SIGTERM.
"""
import argparse
import itertools
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


def listening(iface, ethertype, poll):
    """A socket bound to `iface` for `ethertype`, whose reads give up after `poll`
    seconds; says "ready", as the tests wait for that before they send."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
    s.bind((iface, 0))
    s.settimeout(poll)
    print("ready", flush=True)
    return s


SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6


def arriving(s, timeout, as_on_wire=False):
    """The frames `s` receives (not those its interface sends) for `timeout` seconds.
    Linux takes an 802.1Q tag off a received frame into the packet's metadata; with
    `as_on_wire` it is put back (from PACKET_AUXDATA), so a frame reads as it was sent."""
    if as_on_wire:
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            data, ancillary, _, addr = s.recvmsg(65535, socket.CMSG_SPACE(20))
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        for level, kind, aux in ancillary:
            if level != SOL_PACKET or kind != PACKET_AUXDATA or len(aux) < 20:
                continue
            status = int.from_bytes(aux[0:4], "little")
            tci = int.from_bytes(aux[16:18], "little")
            tpid = int.from_bytes(aux[18:20], "little")
            if status & TP_STATUS_VLAN_VALID:
                if not status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = 0x8100
                data = data[:12] + tpid.to_bytes(2, "big") + tci.to_bytes(2, "big") + data[12:]
        yield data


def recv(args):
    s = listening(args.iface, ETHERTYPE, 0.2)
    tagged = (d for d in arriving(s, args.timeout)
              if len(d) >= 22 and int.from_bytes(d[14:18], "big") == args.tag)
    for data in itertools.islice(tagged, args.count):
        print(data.hex(), flush=True)


def sniff(args):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    s = listening(args.iface, 0x0003, 0.2)
    for data in arriving(s, args.timeout, as_on_wire=True):
        print(data[:256].hex(), flush=True)


def poison(args):
    """ARP in the name of another station: unasked replies and requests claiming
    `claim` at our MAC, several a second, and a reply to every request for it."""
    s = listening(args.iface, 0x0806, 0.05)
    me = mac(args.src)
    claim = socket.inet_aton(args.claim)

    def arp(op, dst_mac, target_mac, target_ip):
        return (dst_mac + me + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04" + op.to_bytes(2, "big")
                + me + claim + target_mac + target_ip).ljust(60, b"\x00")

    deadline = time.time() + args.timeout
    sent = 0
    while time.time() < deadline:
        s.send(arp(2, b"\xff" * 6, b"\x00" * 6, claim))            # gratuitous reply
        s.send(arp(1, b"\xff" * 6, b"\x00" * 6, claim))            # gratuitous request
        sent += 2
        if args.ask:
            # Asking the victim in the claimed name: a switch that learns from
            # requests takes the lie for the claimed station.
            s.send(arp(1, b"\xff" * 6, b"\x00" * 6, socket.inet_aton(args.ask)))
            sent += 1
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING or len(data) < 42:
            continue
        if data[20:22] == b"\x00\x01" and data[38:42] == claim:
            s.send(arp(2, data[6:12], data[22:28], data[28:32]))   # answer for the victim
            sent += 1
    print(f"sent {sent}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["send", "recv", "sniff", "poison"])
    p.add_argument("--claim", default="0.0.0.0", help="poison: the IP to claim")
    p.add_argument("--ask", default=None, help="poison: also ask this IP in the claimed name")
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
    {"send": send, "recv": recv, "sniff": sniff, "poison": poison}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
