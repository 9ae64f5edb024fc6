#!/usr/bin/env python3
"""A small payment service for the refunds example, behaving like a real payment API in
the one way that matters here: a request carrying an `Idempotency-Key` it has seen is
answered with the first request's result and is not performed again. It counts every
refund it performs, per order, so duplicates show.

  POST /refunds            {"order": ID, "amount_cents": N}  -> 200 {"charge_id", "order", "amount_cents"}
                           (header Idempotency-Key: optional; a repeated key replays)
  GET  /refunds/by-key/K   -> 200 the refund made with key K, or 404
  GET  /stats              -> 200 {"refunds": N, "by_order": {ID: n}, "duplicates": N}

  python3 payments.py [--port 8765] [--port-file F] [--state FILE] [--idle-exit SECONDS]

--state keeps the refunds in a JSON file (rewritten after each one), so a restarted
service remembers its keys; --port 0 picks a free port (written to --port-file).
"""
import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"refunds": [], "keys": {}}
LAST_REQUEST = [time.monotonic()]
ARGS = None


def persist():
    if not ARGS.state:
        return
    tmp = ARGS.state + ".tmp"
    with open(tmp, "w") as f:
        json.dump(STATE, f)
    os.replace(tmp, ARGS.state)


def stats():
    by_order = {}
    for r in STATE["refunds"]:
        by_order[r["order"]] = by_order.get(r["order"], 0) + 1
    return {
        "refunds": len(STATE["refunds"]),
        "by_order": by_order,
        "duplicates": sum(n - 1 for n in by_order.values()),
    }


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        LAST_REQUEST[0] = time.monotonic()
        if self.path == "/stats":
            with LOCK:
                return self.reply(200, stats())
        prefix = "/refunds/by-key/"
        if self.path.startswith(prefix):
            key = urllib.parse.unquote(self.path[len(prefix):])
            with LOCK:
                found = STATE["keys"].get(key)
            if found is None:
                return self.reply(404, {"error": "no refund was made with this key"})
            return self.reply(200, found)
        self.reply(404, {"error": "unknown path"})

    def do_POST(self):
        LAST_REQUEST[0] = time.monotonic()
        if self.path != "/refunds":
            return self.reply(404, {"error": "unknown path"})
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            order, amount = str(body["order"]), int(body["amount_cents"])
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, {"error": f"bad refund request: {e}"})
        key = self.headers.get("Idempotency-Key")
        with LOCK:
            if key and key in STATE["keys"]:
                return self.reply(200, dict(STATE["keys"][key], replayed=True))
            refund = {
                "charge_id": f"re_{len(STATE['refunds']) + 1}",
                "order": order,
                "amount_cents": amount,
            }
            STATE["refunds"].append(refund)
            if key:
                STATE["keys"][key] = refund
            persist()
        self.reply(200, refund)


def main():
    global ARGS
    p = argparse.ArgumentParser(description="the refunds example's payment service")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--port-file")
    p.add_argument("--state")
    p.add_argument("--idle-exit", type=float, default=0, help="exit after this many idle seconds (0: never)")
    ARGS = p.parse_args()
    # Started from an agent, it may inherit blocked or ignored signals: SIGTERM and SIGINT
    # stop it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if ARGS.state and os.path.exists(ARGS.state):
        with open(ARGS.state) as f:
            STATE.update(json.load(f))
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    if ARGS.port_file:
        tmp = ARGS.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(tmp, ARGS.port_file)
    if ARGS.idle_exit > 0:
        def watch():
            while time.monotonic() - LAST_REQUEST[0] < ARGS.idle_exit:
                time.sleep(1)
            server.shutdown()
        threading.Thread(target=watch, daemon=True).start()
    print(f"payment service on http://127.0.0.1:{server.server_address[1]}", file=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    main()
