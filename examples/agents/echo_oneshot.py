#!/usr/bin/env python3
"""Reference oneshot command agent: echoes the task input.

The input JSON arrives on stdin; the output JSON goes to stdout; exit 0 means
success. The task's identity is in MUSTER_* environment variables.
"""
import json
import os
import sys


def main():
    task_input = json.load(sys.stdin)
    # Fence side effects with the epoch: a write tagged with an older epoch
    # than one already seen for this task must be refused by the target.
    epoch = int(os.environ["MUSTER_EPOCH"])
    print(f"task {os.environ['MUSTER_TASK_ID']} epoch {epoch}", file=sys.stderr)
    json.dump({"echo": task_input, "agent": os.environ.get("MUSTER_AGENT", "echo")}, sys.stdout)


if __name__ == "__main__":
    main()
