"""security: capability `code.security` (input `review-request`, output `security-report`).

Scans the workspace's Python files for:

- `eval-exec` (error): calls to `eval(...)` or `exec(...)`;
- `shell-true` (error): a call with `shell=True` (subprocess.run/call/Popen/...);
- `pickle-loads` (error): `pickle.loads(...)` / `pickle.load(...)` on untrusted data;
- `hardcoded-secret` (error): `password = "..."`, `api_key = "..."` (and `secret`,
  `token` variants) with a non-empty literal, or an AWS access key id `AKIA[0-9A-Z]{16}`.

Every finding counts: the workflow only ships a change with no security findings.
"""

import ast
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _protocol import AgentError, serve  # noqa: E402
from reviewer import finding, python_files  # noqa: E402

SECRET_ASSIGNMENT = re.compile(
    r"""(?ix)\b(password|passwd|pwd|api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token)\b
        \s*[:=]\s*[rbuf]?(['"])(?P<value>[^'"]+)\2""",
)
AWS_KEY = re.compile(r"\bAKIA[0-9A-Z]{16}\b")


class Scan(ast.NodeVisitor):
    def __init__(self, file):
        self.file = file
        self.findings = []

    def add(self, node, rule, message):
        self.findings.append(finding(self.file, node.lineno, rule, "error", message))

    def visit_Call(self, node):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        if name in ("eval", "exec"):
            self.add(node, "eval-exec", f"`{name}()` runs arbitrary code; parse the input instead")
        if (
            isinstance(func, ast.Attribute)
            and func.attr in ("loads", "load")
            and isinstance(func.value, ast.Name)
            and func.value.id in ("pickle", "cPickle", "dill")
        ):
            self.add(node, "pickle-loads",
                     f"`{func.value.id}.{func.attr}()` executes code from the data; use json")
        for kw in node.keywords:
            if kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value is True:
                self.add(node, "shell-true",
                         "`shell=True` lets the shell interpret the command; pass an argument list")
        self.generic_visit(node)


def scan_file(workspace, rel):
    path = os.path.join(workspace, rel)
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError as e:
        return [finding(rel, 0, "unreadable", "error", f"cannot read: {e}")]
    findings = []
    try:
        visitor = Scan(rel)
        visitor.visit(ast.parse(source, filename=rel))
        findings.extend(visitor.findings)
    except SyntaxError as e:
        findings.append(finding(rel, e.lineno or 0, "syntax-error", "error",
                                f"does not parse, cannot be checked: {e.msg}"))
    for number, line in enumerate(source.splitlines(), start=1):
        m = SECRET_ASSIGNMENT.search(line)
        if m:
            findings.append(finding(rel, number, "hardcoded-secret", "error",
                                    f"hard-coded `{m.group(1)}`; read it from the environment"))
        if AWS_KEY.search(line):
            findings.append(finding(rel, number, "hardcoded-secret", "error",
                                    "hard-coded AWS access key id"))
    return findings


def scan(payload, task):
    workspace = payload.get("workspace") if isinstance(payload, dict) else None
    if not isinstance(workspace, str) or not os.path.isdir(workspace):
        raise AgentError(f"workspace {workspace!r} is not a directory")
    findings = []
    for rel in python_files(workspace, payload.get("files")):
        findings.extend(scan_file(workspace, rel))
    findings.sort(key=lambda f: (f["file"], f["line"], f["rule"]))
    return {"findings": findings}


if __name__ == "__main__":
    serve({"code.security": scan})
