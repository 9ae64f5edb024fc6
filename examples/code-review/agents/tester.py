"""tester: capability `code.test` (input `test-request`, output `test-report`).

Runs the workspace's real unit tests (`unittest` discovery of `test*.py`) in a
subprocess with cwd = the workspace and a timeout bounded by the task's deadline, and
heartbeats every second while they run.

Flaky by design: with MUSTER_FLAKY=first-task the process exits abruptly (exit 1, no
reply) on the first task it receives for a workspace (one per run). That is remembered in
a marker file inside the workspace, so the restarted process works normally and nothing
is left behind once the workspace is removed.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _protocol import AgentError, log, serve  # noqa: E402

# Runs in the workspace: discovers and runs the tests with the stock unittest machinery
# and writes a JSON summary to the file named by argv[1] (stdout belongs to the code
# under test, which may print).
RUNNER = r"""
import json, sys, unittest
out_path = sys.argv[1]
suite = unittest.defaultTestLoader.discover(".", pattern="test*.py", top_level_dir=".")
result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
failures = []
for kind, items in (("failure", result.failures), ("error", result.errors)):
    for test, trace in items:
        # the exception line: the first unindented line after the last "Traceback" header
        lines = trace.rstrip().splitlines()
        starts = [i for i, l in enumerate(lines) if l.startswith("Traceback")]
        after = lines[starts[-1] + 1:] if starts else lines
        message = next((l for l in after if l and not l[0].isspace()), lines[-1] if lines else kind)
        failures.append({"test": test.id(), "kind": kind, "message": message[:500],
                         "trace": trace[-2000:]})
for test in result.unexpectedSuccesses:
    failures.append({"test": test.id(), "kind": "failure", "message": "unexpected success", "trace": ""})
total = result.testsRun - len(result.skipped)
with open(out_path, "w") as f:
    json.dump({"total": total, "failed": len(failures), "passed": total - len(failures),
               "skipped": len(result.skipped), "failures": failures}, f)
"""


def maybe_crash(workspace):
    """Exit abruptly on the first task for this workspace, when asked to."""
    if os.environ.get("MUSTER_FLAKY") != "first-task":
        return
    marker = os.path.join(workspace, ".muster-flaky-tester")
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    log(f"MUSTER_FLAKY=first-task: crashing on purpose (marker {marker})")
    os._exit(1)


def run_tests(out_path, workspace, timeout, task):
    """Runs RUNNER in the workspace; stops it on timeout or cancel. Returns (code, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, out_path],
        cwd=workspace,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, stderr = proc.communicate(timeout=0.2)
            return proc.returncode, stderr or ""
        except subprocess.TimeoutExpired:
            pass
        if task.cancelled.is_set() or time.monotonic() >= deadline:
            proc.kill()
            proc.communicate()
            if task.cancelled.is_set():
                raise AgentError("cancelled")
            raise AgentError(f"tests did not finish within {timeout:g}s")


def test(payload, task):
    workspace = payload.get("workspace") if isinstance(payload, dict) else None
    if not isinstance(workspace, str) or not os.path.isdir(workspace):
        raise AgentError(f"workspace {workspace!r} is not a directory")
    maybe_crash(workspace)
    timeout = task.seconds_left(default=60.0)
    fd, out_path = tempfile.mkstemp(prefix="muster-tests-", suffix=".json")
    os.close(fd)
    try:
        with task.heartbeats(every=1.0):
            returncode, stderr = run_tests(out_path, workspace, timeout, task)
        try:
            with open(out_path) as f:
                report = json.load(f)
        except (OSError, ValueError):
            raise AgentError(f"test runner exited {returncode} without a report: {stderr[-1500:]}")
    finally:
        os.unlink(out_path)
    failures = [{"test": f["test"], "message": f["message"]} for f in report["failures"]]
    log(f"{workspace}: {report['passed']}/{report['total']} passed")
    return {
        "total": report["total"],
        "passed": report["passed"],
        "failed": report["failed"],
        "failures": failures,
    }


if __name__ == "__main__":
    serve({"code.test": test})
