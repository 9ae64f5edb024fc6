#!/usr/bin/env python3
"""Reference stdio command agent: echoes each task's input.

Protocol (see docs/command-agents.md): one JSON object per line on stdin
("task" / "cancel"), one JSON object per line on stdout ("result" / "error" /
"heartbeat"). Logs go to stderr, never stdout.
"""
import json
import os
import sys

AGENT = os.environ.get("MUSTER_AGENT", "echo")


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def main():
    send({"type": "heartbeat"})  # liveness: "I am up"
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        if msg["type"] == "task":
            send({
                "type": "result",
                "task_id": msg["task_id"],
                "epoch": msg["epoch"],  # always answer with the epoch you were given
                "output": {"echo": msg["input"], "agent": AGENT},
            })
        elif msg["type"] == "cancel":
            pass  # tasks are answered at once; nothing to cancel
    # stdin closed: the runtime is done with us


if __name__ == "__main__":
    main()
