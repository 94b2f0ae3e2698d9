#!/usr/bin/python3
"""Layer-2 probe: ask "who has TARGET?" every INTERVAL and record every answer.

IPv4 target: ARP requests (RFC 826). IPv6 target: Neighbor Solicitations to the
solicited-node multicast address (RFC 4861 s4.3, s7.2.2). Plain AF_PACKET sockets, no scapy.
Run inside the client's namespace:

    ip netns exec NS l2probe.py --iface eth0 --src 10.10.100.9 --target 10.10.100.200 \
        --duration 5 [--interval 0.01]

--target may be repeated (or comma-separated) to probe several IPs of one family from one
process: each interval one request per target. SIGTERM/SIGINT end the run early (the end
record is still printed).

Output, one JSON object per line on stdout:
    {"ev":"start","t":..., "mode":"arp"|"ns", "target":..., "mac": our MAC}
    {"ev":"reply","t":..., "seq": last request number sent, "mac": Ethernet source,
     "kind":"reply"|"garp"|"na"|"una", "lladdr": ARP sender / NA target MAC,
     "target": the IP answered for}
    {"ev":"end","t":..., "sent": requests sent}
"reply"/"na" answer a request; "garp"/"una" are unsolicited announcements.
"""
import argparse
import ipaddress
import json
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4


def mac_bytes(s):
    return bytes(int(x, 16) for x in s.split(":"))


def mac_str(b):
    return ":".join("%02x" % x for x in b)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def arp_request(src_mac, src_ip, target):
    eth = b"\xff" * 6 + src_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
    arp += src_mac + src_ip.packed + b"\0" * 6 + target.packed
    return eth + arp


def ns_request(src_mac, src_ip, target):
    t = target.packed
    dst = ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + t[13:])
    dst_mac = b"\x33\x33\xff" + t[13:]
    icmp = struct.pack("!BBHI", 135, 0, 0, 0) + t + struct.pack("!BB", 1, 1) + src_mac
    pseudo = src_ip.packed + dst.packed + struct.pack("!I", len(icmp)) + b"\0\0\0" + bytes([58])
    csum = checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + src_ip.packed + dst.packed
    eth = dst_mac + src_mac + struct.pack("!H", ETH_P_IPV6)
    return eth + ip6 + icmp


def parse_arp(frame, targets):
    """(kind, lladdr, target) of an ARP answer for one of `targets` (packed -> address)."""
    if len(frame) < 42:
        return None
    op = struct.unpack("!H", frame[20:22])[0]
    sha, spa, tpa = frame[22:28], frame[28:32], frame[38:42]
    target = targets.get(spa)
    if target is None:
        return None
    if op == 2:
        return "reply", mac_str(sha), target
    if op == 1 and tpa == spa:
        return "garp", mac_str(sha), target
    return None


def parse_na(frame, targets):
    # Ethernet(14) + IPv6(40) + ICMPv6; no extension headers in NDP (RFC 4861 s6.1.2 style).
    if len(frame) < 14 + 40 + 24 or frame[14 + 6] != 58:
        return None
    icmp = frame[54:]
    target = targets.get(icmp[8:24])
    if icmp[0] != 136 or target is None:
        return None
    solicited = bool(icmp[4] & 0x40)
    lladdr = None
    opts = icmp[24:]
    while len(opts) >= 8:
        olen = opts[1] * 8
        if olen == 0:
            break
        if opts[0] == 2 and olen >= 8:
            lladdr = mac_str(opts[2:8])
        opts = opts[olen:]
    return ("na" if solicited else "una"), lladdr, target


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--src", required=True, help="our address (the replies come back to it)")
    ap.add_argument("--target", required=True, action="append")
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--interval", type=float, default=0.01)
    a = ap.parse_args()

    targets = [ipaddress.ip_address(t) for arg in a.target for t in arg.split(",") if t]
    src = ipaddress.ip_address(a.src)
    v6 = targets[0].version == 6
    if any((t.version == 6) != v6 for t in targets):
        sys.exit("l2probe: all targets must be of one family")
    by_packed = {t.packed: t for t in targets}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    proto = ETH_P_IPV6 if v6 else ETH_P_ARP
    with open("/sys/class/net/%s/address" % a.iface) as f:
        my_mac_s = f.read().strip()
    my_mac = mac_bytes(my_mac_s)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    s.bind((a.iface, proto))
    frames = [ns_request(my_mac, src, t) if v6 else arp_request(my_mac, src, t) for t in targets]
    parse = parse_na if v6 else parse_arp

    out = sys.stdout
    start = time.time()
    out.write(json.dumps({"ev": "start", "t": start, "mode": "ns" if v6 else "arp",
                          "target": ",".join(str(t) for t in targets),
                          "mac": my_mac_s}) + "\n")
    out.flush()
    end = start + a.duration
    seq = 0
    next_send = start
    while True:
        now = time.time()
        if now >= end or stop:
            break
        if now >= next_send:
            seq += 1
            for frame in frames:
                try:
                    s.send(frame)
                except OSError:
                    pass  # link down: keep probing, the gap shows it
            next_send += a.interval
            if next_send < now:
                next_send = now + a.interval
        timeout = max(0.0, min(next_send, end) - time.time())
        r, _, _ = select.select([s], [], [], timeout)
        if not r:
            continue
        while True:
            try:
                data, addr = s.recvfrom(2048, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            got = parse(data, by_packed)
            if got is None:
                continue
            kind, lladdr, target = got
            out.write(json.dumps({"ev": "reply", "t": time.time(), "seq": seq,
                                  "mac": mac_str(data[6:12]), "kind": kind,
                                  "lladdr": lladdr, "target": str(target)}) + "\n")
        out.flush()
    out.write(json.dumps({"ev": "end", "t": time.time(), "sent": seq}) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
