"""The muster command-agent protocol, shared by the code-review agents.

An agent module defines handlers ``fn(input: dict, task: Task) -> dict`` keyed by
capability name and calls ``serve(handlers)``. Two modes:

stdio (default): one long-lived process per agent instance. Reads JSON lines from stdin:
    {"type":"task","task_id":..,"epoch":N,"attempt":N,"capability":..,"input":{..},"deadline_ms":N}
    {"type":"cancel","task_id":..,"epoch":N}
and writes JSON lines to stdout (flushed after each line):
    {"type":"result","task_id":..,"epoch":N,"output":{..}}
    {"type":"error","task_id":..,"epoch":N,"message":".."}
    {"type":"heartbeat","task_id":..,"epoch":N}
Each task runs on its own thread, so cancels and heartbeats flow while it works.
stderr is for logs. End of stdin ends the process normally.

oneshot (``--oneshot [CAPABILITY]``): the task input JSON on stdin, the output JSON on
stdout, exit 0; an error is a message on stderr and exit 1. The task's identity comes
from the MUSTER_* environment variables (all optional when run by hand). The capability
is the argument, else MUSTER_CAPABILITY, else the handler when there is only one.
"""

import json
import os
import sys
import threading
import time
import traceback

__all__ = ["AgentError", "Task", "serve", "log"]


class AgentError(Exception):
    """A task failed for a reason worth reporting (not a crash of the agent)."""


def log(*parts):
    """A log line on stderr, prefixed with the agent's name."""
    who = os.environ.get("MUSTER_AGENT") or os.path.basename(sys.argv[0])
    print(f"[{who}]", *parts, file=sys.stderr, flush=True)


class Task:
    """One task as the handler sees it."""

    def __init__(self, task_id, epoch, attempt, capability, deadline_ms, emit=None):
        self.task_id = task_id
        self.epoch = epoch
        self.attempt = attempt
        self.capability = capability
        self.deadline_ms = deadline_ms
        self.agent = os.environ.get("MUSTER_AGENT", "")
        self.cancelled = threading.Event()
        self._emit = emit

    def heartbeat(self):
        """Tell the task's owner this attempt is still alive (no-op in oneshot mode)."""
        if self._emit is not None and not self.cancelled.is_set():
            self._emit({"type": "heartbeat", "task_id": self.task_id, "epoch": self.epoch})

    def seconds_left(self, default=60.0):
        """Seconds until the deadline (at least 1), or `default` when there is none.

        A `deadline_ms` above 10^12 is read as Unix milliseconds, a smaller one as a
        duration in milliseconds.
        """
        if not self.deadline_ms:
            return default
        ms = int(self.deadline_ms)
        if ms > 10**12:
            ms -= int(time.time() * 1000)
        return max(1.0, min(default, ms / 1000.0))

    def heartbeats(self, every=1.0):
        """A context manager that heartbeats every `every` seconds while its body runs."""
        return _Heartbeats(self, every)


class _Heartbeats:
    def __init__(self, task, every):
        self.task = task
        self.every = every
        self.stop = threading.Event()
        self.thread = None

    def __enter__(self):
        def beat():
            while not self.stop.wait(self.every):
                self.task.heartbeat()

        self.task.heartbeat()
        self.thread = threading.Thread(target=beat, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        return False


def _int_env(name):
    value = os.environ.get(name)
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _oneshot(handlers, capability):
    capability = capability or os.environ.get("MUSTER_CAPABILITY")
    if not capability:
        if len(handlers) != 1:
            log("several capabilities; name one:", ", ".join(sorted(handlers)))
            return 2
        capability = next(iter(handlers))
    handler = handlers.get(capability)
    if handler is None:
        log(f"unknown capability {capability!r}; serves", ", ".join(sorted(handlers)))
        return 2
    try:
        payload = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        log(f"stdin is not JSON: {e}")
        return 2
    task = Task(
        os.environ.get("MUSTER_TASK_ID", "oneshot"),
        _int_env("MUSTER_EPOCH") or 0,
        _int_env("MUSTER_ATTEMPT") or 1,
        capability,
        _int_env("MUSTER_DEADLINE_MS"),
    )
    try:
        output = handler(payload, task)
    except AgentError as e:
        log(f"error: {e}")
        return 1
    except Exception:  # a bug in the agent: report it like any failure
        traceback.print_exc()
        return 1
    json.dump(output, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


class _Stdio:
    def __init__(self, handlers):
        self.handlers = handlers
        self.lock = threading.Lock()
        self.running = {}  # (task_id, epoch) -> Task

    def emit(self, message):
        line = json.dumps(message, separators=(",", ":"))
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def run_task(self, task, handler, payload):
        try:
            output = handler(payload, task)
            reply = {"type": "result", "task_id": task.task_id, "epoch": task.epoch, "output": output}
        except AgentError as e:
            reply = {"type": "error", "task_id": task.task_id, "epoch": task.epoch, "message": str(e)}
        except Exception as e:
            traceback.print_exc()
            reply = {
                "type": "error",
                "task_id": task.task_id,
                "epoch": task.epoch,
                "message": f"{type(e).__name__}: {e}",
            }
        with self.lock:
            self.running.pop((task.task_id, task.epoch), None)
        if task.cancelled.is_set():
            log(f"task {task.task_id} epoch {task.epoch} was cancelled; result dropped")
            return
        self.emit(reply)

    def handle(self, message):
        kind = message.get("type")
        task_id = message.get("task_id")
        epoch = message.get("epoch", 0)
        if kind == "cancel":
            with self.lock:
                task = self.running.get((task_id, epoch))
            if task is not None:
                task.cancelled.set()
                log(f"cancel {task_id} epoch {epoch}")
            return
        if kind != "task":
            log(f"ignoring message of type {kind!r}")
            return
        capability = message.get("capability")
        handler = self.handlers.get(capability)
        if handler is None:
            self.emit({
                "type": "error",
                "task_id": task_id,
                "epoch": epoch,
                "message": f"this agent does not serve capability {capability!r}",
            })
            return
        task = Task(task_id, epoch, message.get("attempt", 1), capability,
                    message.get("deadline_ms"), emit=self.emit)
        with self.lock:
            self.running[(task_id, epoch)] = task
        threading.Thread(
            target=self.run_task, args=(task, handler, message.get("input")), daemon=True
        ).start()

    def loop(self):
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                log(f"bad line ignored ({e}): {line[:200]}")
                continue
            self.handle(message)
        # stdin closed: the runtime is stopping this instance. Let running tasks finish briefly.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with self.lock:
                if not self.running:
                    break
            time.sleep(0.05)
        return 0


def serve(handlers):
    """Run the agent: oneshot with `--oneshot [CAPABILITY]`, else the stdio loop."""
    args = sys.argv[1:]
    if args and args[0] == "--oneshot":
        sys.exit(_oneshot(handlers, args[1] if len(args) > 1 else None))
    if args:
        log("usage:", os.path.basename(sys.argv[0]), "[--oneshot [CAPABILITY]]")
        sys.exit(2)
    sys.exit(_Stdio(handlers).loop())
