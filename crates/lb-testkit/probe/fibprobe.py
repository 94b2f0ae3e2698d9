#!/usr/bin/python3
"""FIB probe: the kernel's main-table route for PREFIX, sampled every INTERVAL over rtnetlink
(a route dump, as `ip route show PREFIX` does), and every change of it as the kernel
announces it (the route multicast groups, as `ip monitor route` does).

    ip netns exec NS fibprobe.py --prefix 172.19.100.10/32 --duration 60 [--interval 0.01]

Output, one JSON object per line on stdout:
    {"ev":"start","t":..., "prefix":...}
    {"ev":"sample","t": dump time, "seq":N, "nexthops":[gateways, sorted], "proto":N|null}
        (nexthops [] and proto null: no such route at that moment)
    {"ev":"change","t": receive time, "kind":"new"|"del", "nexthops":[...], "proto":N}
    {"ev":"end","t":..., "sent":N}
The samples say whether the route was there at each tick; the changes catch a removal
shorter than a tick. SIGTERM/SIGINT end the run early (the end record is still printed).
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

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTA_DST, RTA_GATEWAY, RTA_MULTIPATH, RTA_TABLE = 1, 5, 9, 15
RT_TABLE_MAIN = 254
RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE = 0x40, 0x400

STOPPED = []


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def attrs(data):
    """(type, payload) of each rtattr in `data`."""
    out = []
    while len(data) >= 4:
        ln, typ = struct.unpack("=HH", data[:4])
        if ln < 4:
            break
        out.append((typ & 0x3FFF, data[4:ln]))
        data = data[(ln + 3) & ~3:]
    return out


def messages(data):
    """(type, payload) of each netlink message in `data`."""
    out = []
    while len(data) >= 16:
        ln, typ, _flags, _seq, _pid = struct.unpack("=IHHII", data[:16])
        if ln < 16:
            break
        out.append((typ, data[16:ln]))
        data = data[(ln + 3) & ~3:]
    return out


def route(payload, net):
    """(nexthops, proto) if this rtmsg is the main-table route for `net`, else None."""
    if len(payload) < 12:
        return None
    family, dst_len, _src_len, _tos, table, proto, _scope, _rtype, _flags = struct.unpack(
        "=BBBBBBBBI", payload[:12])
    want = socket.AF_INET6 if net.version == 6 else socket.AF_INET
    if family != want or dst_len != net.prefixlen:
        return None
    dst, gws = None, []
    for typ, val in attrs(payload[12:]):
        if typ == RTA_TABLE and len(val) >= 4:
            table = struct.unpack("=I", val[:4])[0]
        elif typ == RTA_DST:
            dst = ipaddress.ip_address(val)
        elif typ == RTA_GATEWAY:
            gws.append(str(ipaddress.ip_address(val)))
        elif typ == RTA_MULTIPATH:
            mp = val
            while len(mp) >= 8:
                ln = struct.unpack("=H", mp[:2])[0]
                if ln < 8:
                    break
                for t2, v2 in attrs(mp[8:ln]):
                    if t2 == RTA_GATEWAY:
                        gws.append(str(ipaddress.ip_address(v2)))
                mp = mp[(ln + 3) & ~3:]
    if table != RT_TABLE_MAIN or dst != net.network_address:
        return None
    return sorted(gws), proto


def dump(sock, seq, net):
    """One route dump: (nexthops, proto) of the route for `net`, ([], None) without one."""
    family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
    body = struct.pack("=BBBBBBBBI", family, 0, 0, 0, 0, 0, 0, 0, 0)
    hdr = struct.pack("=IHHII", 16 + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    sock.send(hdr + body)
    found = ([], None)
    while True:
        data = sock.recv(1 << 16)
        for typ, payload in messages(data):
            if typ == NLMSG_DONE:
                return found
            if typ == NLMSG_ERROR:
                return found
            if typ == RTM_NEWROUTE:
                r = route(payload, net)
                if r is not None:
                    found = r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--interval", type=float, default=0.01)
    a = ap.parse_args()
    net = ipaddress.ip_network(a.prefix)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOPPED.append(time.time()))
    groups = RTMGRP_IPV6_ROUTE if net.version == 6 else RTMGRP_IPV4_ROUTE
    mon = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    mon.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    mon.bind((0, groups))
    q = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    q.bind((0, 0))
    start = time.time()
    emit({"ev": "start", "t": start, "prefix": str(net)})
    end = start + a.duration
    seq = 0
    next_sample = start
    while not STOPPED and time.time() < end:
        now = time.time()
        if now >= next_sample:
            seq += 1
            gws, proto = dump(q, seq, net)
            emit({"ev": "sample", "t": now, "seq": seq, "nexthops": gws, "proto": proto})
            next_sample += a.interval
            if next_sample < now:
                next_sample = now + a.interval
        wait = max(0.0, next_sample - time.time())
        try:
            r, _, _ = select.select([mon], [], [], wait)
        except InterruptedError:
            continue
        if r:
            data = mon.recv(1 << 16)
            t = time.time()
            for typ, payload in messages(data):
                if typ in (RTM_NEWROUTE, RTM_DELROUTE):
                    rt = route(payload, net)
                    if rt is not None:
                        emit({"ev": "change", "t": t,
                              "kind": "new" if typ == RTM_NEWROUTE else "del",
                              "nexthops": rt[0], "proto": rt[1]})
    emit({"ev": "end", "t": time.time(), "sent": seq})


if __name__ == "__main__":
    main()
