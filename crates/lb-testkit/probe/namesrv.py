#!/usr/bin/python3
"""A tiny HTTP server that answers every GET with this host's NAME (one line), so a client
can see which node a VIP's traffic reached.

    ip netns exec NS namesrv.py --name node1 --port 80 --bind 10.10.100.200 --bind fd00:10::200

Binds each address (the VIPs; the lab sets ip_nonlocal_bind so they need not be present yet)
in its own thread. Prints "listening" once every socket is bound.
"""
import argparse
import http.server
import socket
import sys
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--bind", action="append", required=True)
    args = ap.parse_args()
    body = (args.name + "\n").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *a):
            pass

    servers = []
    for addr in args.bind:

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            allow_reuse_address = True

        servers.append(Server((addr, args.port), Handler))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    print("listening", flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    sys.exit(main())
