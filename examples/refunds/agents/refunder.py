#!/usr/bin/env python3
"""The refunds example's agent: a muster command agent (stdio mode) that refunds each
order of its task through the payment service exactly once, whatever happens to muster.

For each order it uses the effect protocol (docs/command-agents.md, "Effects"):
  - the task line's `effects` (the task's ledger) says what earlier attempts did: a refund
    `done` is not sent again; one of `unknown` outcome (started, never reported done:
    muster died in between) is looked up at the payment service by its key;
  - otherwise it prints `effect_started` (asking for an `effect_ack`, and waiting for it:
    then the declaration is on disk), sends the refund with the header
    `Idempotency-Key: <effect_key><name>`, and prints `effect_done` with the answer.

REFUNDS_UNSAFE=1 turns both off (no ledger, no key), as a naive agent would be: a kill
between a refund and the task's result then refunds again on `muster resume`.
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8765"
URL = os.environ.get("REFUNDS_PAYMENTS_URL", DEFAULT_URL).rstrip("/")
UNSAFE = os.environ.get("REFUNDS_UNSAFE") == "1"
WORK_S = int(os.environ.get("REFUNDS_WORK_MS", "200")) / 1000
HERE = os.path.dirname(os.path.abspath(__file__))


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def call(method, path, body=None, key=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def reachable():
    try:
        call("GET", "/stats")
        return True
    except OSError:
        return False


def reach_service():
    """The payment service: the one REFUNDS_PAYMENTS_URL names, else the example's own,
    started (in a session of its own, so it outlives muster) when nobody answers."""
    if reachable():
        return
    if "REFUNDS_PAYMENTS_URL" in os.environ:
        sys.exit(f"refunder: no payment service answers at {URL}")
    os.makedirs(".muster", exist_ok=True)
    port = urllib.parse.urlparse(URL).port
    subprocess.Popen(
        [sys.executable, os.path.join(HERE, "..", "payments.py"), "--port", str(port),
         "--state", ".muster/refunds-payments.json", "--idle-exit", "600"],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(".muster/refunds-payments.log", "a"))
    for _ in range(200):
        if reachable():
            print(f"refunder: started the payment service at {URL}", file=sys.stderr)
            return
        time.sleep(0.05)
    sys.exit(f"refunder: the payment service did not come up at {URL}")


def wait_ack(tid, epoch, name):
    """Waits for muster's `effect_ack` of effect `name`: its `effect_started` is on disk,
    so the refund may be sent. A cancel of this task ends the wait (no refund)."""
    for line in sys.stdin:
        msg = json.loads(line)
        kind = msg.get("type")
        if kind == "effect_ack" and msg.get("task_id") == tid and msg.get("name") == name:
            return msg.get("written", False), msg.get("error", "")
        if kind == "cancel" and msg.get("task_id") == tid and msg.get("epoch") == epoch:
            return False, "the task was cancelled"
    sys.exit("refunder: stdin closed while waiting for an effect_ack")


def refund_all(task):
    tid, epoch = task["task_id"], task["epoch"]
    prefix = task.get("effect_key", "")
    ledger = {e["name"]: e for e in task.get("effects", [])}
    charges, done_before, reconciled = [], 0, 0
    for order in task["input"]["orders"]:
        request = {"order": order["id"], "amount_cents": order["amount_cents"]}
        if UNSAFE:
            status, body = call("POST", "/refunds", request)
            if status != 200:
                return {"error": f"refund of {order['id']} refused: {body}"}
            time.sleep(WORK_S)  # bookkeeping
            charges.append(body["charge_id"])
            continue
        name = f"refund:{order['id']}"
        key = prefix + name
        entry = ledger.get(name)
        if entry and entry["state"] == "done":
            charges.append(entry["result"]["charge_id"])
            done_before += 1
            continue
        if entry and entry["state"] == "unknown":
            # Started by an attempt that never said how it ended: ask, by its key.
            status, body = call("GET", "/refunds/by-key/" + urllib.parse.quote(key, safe=""))
            if status == 200:
                send({"type": "effect_done", "task_id": tid, "epoch": epoch,
                      "name": name, "key": key, "result": body})
                charges.append(body["charge_id"])
                reconciled += 1
                continue
        send({"type": "effect_started", "task_id": tid, "epoch": epoch, "name": name, "key": key,
              "ack": True})
        written, why = wait_ack(tid, epoch, name)
        if not written:
            return {"error": f"refund of {order['id']} not declared to muster: {why}"}
        status, body = call("POST", "/refunds", request, key=key)
        if status != 200:
            return {"error": f"refund of {order['id']} refused: {body}"}
        time.sleep(WORK_S)  # bookkeeping: a crash here leaves the refund's outcome unknown
        send({"type": "effect_done", "task_id": tid, "epoch": epoch, "name": name, "key": key,
              "result": body})
        charges.append(body["charge_id"])
    return {"output": {"refunded": len(charges), "charges": charges,
                       "already_done": done_before, "reconciled": reconciled}}


def main():
    reach_service()
    send({"type": "heartbeat"})
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("type") != "task":
            continue
        try:
            answer = refund_all(msg)
        except OSError as e:
            answer = {"error": f"the payment service failed: {e}"}
        if "error" in answer:
            send({"type": "error", "task_id": msg["task_id"], "epoch": msg["epoch"],
                  "message": answer["error"]})
        else:
            send({"type": "result", "task_id": msg["task_id"], "epoch": msg["epoch"],
                  "output": answer["output"]})


if __name__ == "__main__":
    main()
