#!/usr/bin/python3
"""Reachability probe: ICMP echo, TCP connect or UDP request to TARGET every INTERVAL.

    ip netns exec NS reach.py --mode icmp|tcp|udp --target IP [--port N] --duration 5 \
        [--interval 0.02] [--timeout 0.2]

Output, one JSON object per line on stdout:
    {"ev":"start","t":..., "mode":..., "target":...}
    {"ev":"result","t": send time, "seq":N, "ok":bool, "rtt": seconds or null,
     "data": first line the server sent (tcp/udp) or null}
    {"ev":"end","t":..., "sent":N}
ICMP is asynchronous (a late reply still counts, matched by sequence number); TCP connects
and reads until the peer closes or TIMEOUT; UDP sends "probe SEQ" and waits TIMEOUT for one
datagram. "data" lets a test see which backend answered (e.g. a server that prints its name).
SIGTERM/SIGINT end the run early (results so far and the end record are still printed).
"""
import argparse
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import sys
import time


# Set by SIGTERM/SIGINT: stop sending, finish as if the duration had passed.
STOPPED = []


def until(end):
    """The run's end: `end`, or now once a stop signal came."""
    return min(end, STOPPED[0]) if STOPPED else end


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def icmp_loop(a, target, end):
    v6 = target.version == 6
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        req, rep = 128, 129
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        req, rep = 8, 0
    ident = os.getpid() & 0xFFFF
    sent = {}
    seq = 0
    next_send = time.time()
    while True:
        now = time.time()
        end = until(end)
        if now >= end + a.timeout:
            break
        if now >= next_send and now < end:
            seq += 1
            hdr = struct.pack("!BBHHH", req, 0, 0, ident, seq & 0xFFFF)
            payload = b"lbprobe"
            pkt = hdr + payload
            if not v6:  # the kernel computes ICMPv6 checksums on raw sockets (RFC 3542 s3.1)
                pkt = hdr[:2] + struct.pack("!H", checksum(pkt)) + hdr[4:] + payload
            try:
                s.sendto(pkt, (str(target), 0))
            except OSError:
                pass
            sent[seq & 0xFFFF] = (seq, now)
            next_send += a.interval
            if next_send < now:
                next_send = now + a.interval
        wake = min(next_send if next_send < end else end + a.timeout, end + a.timeout)
        r, _, _ = select.select([s], [], [], max(0.0, wake - time.time()))
        if not r:
            continue
        data, addr = s.recvfrom(2048)
        t = time.time()
        icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
        if len(icmp) < 8:
            continue
        typ, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
        if typ != rep or rid != ident or rseq not in sent:
            continue
        full, st = sent.pop(rseq)
        emit({"ev": "result", "t": st, "seq": full, "ok": True, "rtt": t - st, "data": None})
    for full, st in sorted(sent.values()):
        emit({"ev": "result", "t": st, "seq": full, "ok": False, "rtt": None, "data": None})
    return seq


def stream_loop(a, target, end, udp):
    fam = socket.AF_INET6 if target.version == 6 else socket.AF_INET
    seq = 0
    next_send = time.time()
    while time.time() < until(end):
        now = time.time()
        if now < next_send:
            time.sleep(next_send - now)
            continue
        seq += 1
        st = time.time()
        ok, data = False, None
        s = socket.socket(fam, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        try:
            if udp:
                s.sendto(b"probe %d\n" % seq, (str(target), a.port))
                got = s.recv(2048)
                ok = True
            else:
                s.connect((str(target), a.port))
                ok = True
                got = b""
                try:
                    while len(got) < 4096:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                except OSError:
                    pass
            data = got.decode("utf-8", "replace").splitlines()[0] if got.strip() else None
        except OSError:
            pass
        finally:
            s.close()
        emit({"ev": "result", "t": st, "seq": seq, "ok": ok,
              "rtt": (time.time() - st) if ok else None, "data": data})
        next_send += a.interval
        if next_send < time.time():
            next_send = time.time()
    return seq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["icmp", "tcp", "udp"], required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--timeout", type=float, default=0.2)
    a = ap.parse_args()
    target = ipaddress.ip_address(a.target)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOPPED.append(time.time()))
    start = time.time()
    emit({"ev": "start", "t": start, "mode": a.mode, "target": str(target)})
    end = start + a.duration
    if a.mode == "icmp":
        sent = icmp_loop(a, target, end)
    else:
        sent = stream_loop(a, target, end, a.mode == "udp")
    emit({"ev": "end", "t": time.time(), "sent": sent})


if __name__ == "__main__":
    main()
