#!/usr/bin/python3
"""Service watch: every change of a Service as the API server streams it (a Kubernetes watch),
stamped with its arrival time, so a test can tell when a Service's IPs changed.

    ip netns exec NS svcwatch.py --url http://10.10.100.10:6443/api/v1/services

Output, one JSON object per line on stdout:
    {"ev":"start","t":...}
    {"ev":"svc","t": receive time, "type":"ADDED"|"MODIFIED"|"DELETED", "key":"ns/name",
     "ips":[status.loadBalancer.ingress[*].ip]}
    {"ev":"end","t":...}
A watch the server ends is resumed from the last resourceVersion seen. SIGTERM/SIGINT end the
run (the end record is still printed).
"""
import argparse
import json
import signal
import sys
import time
import urllib.error
import urllib.request


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Stop(Exception):
    pass


def stop(*_):
    raise Stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    a = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    rv = ""
    try:
        emit({"ev": "start", "t": time.time()})
        while True:
            url = a.url + "?watch=true" + ("&resourceVersion=" + rv if rv else "")
            try:
                with urllib.request.urlopen(url) as resp:
                    for line in resp:
                        t = time.time()
                        try:
                            ev = json.loads(line)
                        except ValueError:
                            continue
                        obj = ev.get("object") or {}
                        meta = obj.get("metadata") or {}
                        rv = meta.get("resourceVersion") or rv
                        if ev.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
                            continue
                        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get(
                            "ingress") or []
                        emit({"ev": "svc", "t": t, "type": ev["type"],
                              "key": "%s/%s" % (meta.get("namespace"), meta.get("name")),
                              "ips": [i.get("ip") for i in ingress if i.get("ip")]})
            except urllib.error.HTTPError as e:
                if e.code == 410:  # too old: list again (ADDED events with the same IPs)
                    rv = ""
                time.sleep(0.1)
            except OSError:
                time.sleep(0.1)
    except Stop:
        pass
    emit({"ev": "end", "t": time.time()})


if __name__ == "__main__":
    main()
