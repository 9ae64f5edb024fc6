"""implementer: capability `code.write` (input `code-change`, output `code-result`).

Stands in for a coding model: the change it "writes" is the next candidate patch from
`examples/code-review/changes/candidate-N/` (full replacement files), applied to a
workspace that starts as a copy of `examples/code-review/sample/`.

- No workspace (or one that no longer exists): copy the sample into a fresh temp dir
  (`muster-review-*`) and apply candidate 1.
- Otherwise the candidate is the round number (`round`, from 1), capped at the last
  candidate; without a round, the one after the candidate last applied in that workspace
  when there is feedback, the same one when there is none. Running out of candidates
  returns the last one again; the workflow's loop bound then hands the change to a human.

The choice depends only on the input and the workspace, so a retried attempt of the
same round applies the same candidate. Environment overrides: MUSTER_REVIEW_SAMPLE and
MUSTER_REVIEW_CHANGES (directories).
"""

import hashlib
import os
import re
import shutil
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _protocol import AgentError, log, serve  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.dirname(HERE)
MARKER = ".muster-candidate"


def sample_dir():
    return os.environ.get("MUSTER_REVIEW_SAMPLE") or os.path.join(EXAMPLE, "sample")


def candidates():
    """Candidate directories, in order (candidate-1, candidate-2, ...)."""
    root = os.environ.get("MUSTER_REVIEW_CHANGES") or os.path.join(EXAMPLE, "changes")
    found = []
    for entry in os.listdir(root):
        m = re.fullmatch(r"candidate-(\d+)", entry)
        if m and os.path.isdir(os.path.join(root, entry)):
            found.append((int(m.group(1)), os.path.join(root, entry)))
    if not found:
        raise AgentError(f"no candidate-N directories in {root}")
    return [path for _, path in sorted(found)]


# The workspaces this process created: removed when the runtime stops it (stdin closes,
# or SIGTERM), so a run leaves no temporary directory behind. A process that crashes
# keeps them: the run goes on with them after the restart.
CREATED = []


def remove_workspaces():
    for workspace in CREATED:
        shutil.rmtree(workspace, ignore_errors=True)
    CREATED.clear()


def fresh_workspace():
    workspace = tempfile.mkdtemp(prefix="muster-review-")
    CREATED.append(workspace)
    src = sample_dir()
    for entry in os.listdir(src):
        path = os.path.join(src, entry)
        if entry == "__pycache__" or not os.path.isfile(path):
            continue
        shutil.copy2(path, os.path.join(workspace, entry))
    return workspace


def last_applied(workspace):
    try:
        with open(os.path.join(workspace, MARKER)) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def apply(candidate_dir, workspace):
    """Copy the candidate's files (not those starting with `_`) into the workspace."""
    files = []
    for root, dirs, names in os.walk(candidate_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(names):
            if name.startswith("_"):
                continue
            src = os.path.join(root, name)
            rel = os.path.relpath(src, candidate_dir)
            dst = os.path.join(workspace, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
            files.append(rel.replace(os.sep, "/"))
    return sorted(files)


def digest_of(workspace, files):
    """sha256 over the written files' paths and contents: two results with the same digest
    hold the same code, so the idempotent review and security scan may reuse a verdict."""
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode() + b"\0")
        with open(os.path.join(workspace, rel), "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return "sha256:" + h.hexdigest()


def summary_of(candidate_dir):
    try:
        with open(os.path.join(candidate_dir, "_summary.txt")) as f:
            return f.read().strip()
    except OSError:
        return os.path.basename(candidate_dir)


def write(payload, task):
    spec = payload.get("spec")
    if not isinstance(spec, str) or not spec.strip():
        raise AgentError("input.spec must be a non-empty string")
    feedback = payload.get("feedback") or []
    workspace = payload.get("workspace")
    all_candidates = candidates()

    if not workspace or not os.path.isdir(workspace):
        if workspace:
            log(f"workspace {workspace} is gone; starting a fresh one")
        workspace = fresh_workspace()
        previous = 0
    else:
        previous = last_applied(workspace)

    round_ = payload.get("round")
    if isinstance(round_, int) and round_ >= 1:
        n = round_
    elif previous == 0:
        n = 1
    else:
        n = previous + 1 if feedback else previous
    if n > len(all_candidates):
        log(f"round {n}: no candidate left, returning candidate {len(all_candidates)} again")
        n = len(all_candidates)

    candidate_dir = all_candidates[n - 1]
    files = apply(candidate_dir, workspace)
    with open(os.path.join(workspace, MARKER), "w") as f:
        f.write(f"{n}\n")
    summary = summary_of(candidate_dir)
    if feedback:
        summary += f" (after {len(feedback)} feedback item(s))"
    log(f"candidate {n} applied in {workspace}: {', '.join(files)}")
    return {
        "workspace": workspace,
        "candidate": n,
        "round": round_ if isinstance(round_, int) and round_ >= 1 else n,
        "files": files,
        "digest": digest_of(workspace, files),
        "summary": summary,
    }


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve({"code.write": write})
    except SystemExit as stop:
        if stop.code in (0, None):
            remove_workspaces()
        raise
