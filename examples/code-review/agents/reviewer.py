"""reviewer: capability `code.review` (input `review-request`, output `review-report`).

A static review of the workspace's Python files with `ast`:

- `bare-except` (error): `except:` without an exception type;
- `leftover-print` (error): a `print(...)` call outside an `if __name__ == "__main__":` block;
- `function-too-long` (error): a function longer than 30 lines;
- `missing-docstring` (warning): a public function (name not starting with `_`) without a
  docstring, in a module that is not a test module (`test*.py`).

Only error-severity findings count in `errors`.
"""

import ast
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _protocol import AgentError, serve  # noqa: E402

MAX_FUNCTION_LINES = 30


def python_files(workspace, files=None):
    """The workspace's .py files (relative, sorted), or the given ones that are .py files."""
    if files:
        chosen = [f for f in files if f.endswith(".py")]
    else:
        chosen = []
        for root, dirs, names in os.walk(workspace):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for name in names:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(root, name), workspace)
                    chosen.append(rel.replace(os.sep, "/"))
    return sorted(set(chosen))


def finding(file, line, rule, severity, message):
    return {"file": file, "line": line, "rule": rule, "severity": severity, "message": message}


def is_main_guard(node):
    """`if __name__ == "__main__":`"""
    test = node.test
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


class Review(ast.NodeVisitor):
    def __init__(self, file, is_test):
        self.file = file
        self.is_test = is_test
        self.findings = []
        self.in_main = 0

    def visit_If(self, node):
        if is_main_guard(node):
            self.in_main += 1
            for child in node.body:
                self.visit(child)
            self.in_main -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_ExceptHandler(self, node):
        if node.type is None:
            self.findings.append(finding(
                self.file, node.lineno, "bare-except", "error",
                "bare `except:` also catches KeyboardInterrupt and SystemExit; name the exception",
            ))
        self.generic_visit(node)

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id == "print" and not self.in_main:
            self.findings.append(finding(
                self.file, node.lineno, "leftover-print", "error",
                "leftover `print(...)` call; use logging or remove it",
            ))
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
            self.findings.append(finding(
                self.file, node.lineno, "function-too-long", "error",
                f"function `{node.name}` is {length} lines long (at most {MAX_FUNCTION_LINES})",
            ))
        if not self.is_test and not node.name.startswith("_") and ast.get_docstring(node) is None:
            self.findings.append(finding(
                self.file, node.lineno, "missing-docstring", "warning",
                f"public function `{node.name}` has no docstring",
            ))
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef


def review_file(workspace, rel):
    path = os.path.join(workspace, rel)
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError as e:
        return [finding(rel, 0, "unreadable", "error", f"cannot read: {e}")]
    try:
        tree = ast.parse(source, filename=rel)
    except SyntaxError as e:
        return [finding(rel, e.lineno or 0, "syntax-error", "error", f"does not parse: {e.msg}")]
    visitor = Review(rel, os.path.basename(rel).startswith("test"))
    visitor.visit(tree)
    return visitor.findings


def review(payload, task):
    workspace = payload.get("workspace") if isinstance(payload, dict) else None
    if not isinstance(workspace, str) or not os.path.isdir(workspace):
        raise AgentError(f"workspace {workspace!r} is not a directory")
    findings = []
    for rel in python_files(workspace, payload.get("files")):
        findings.extend(review_file(workspace, rel))
    findings.sort(key=lambda f: (f["file"], f["line"], f["rule"]))
    return {"findings": findings, "errors": sum(1 for f in findings if f["severity"] == "error")}


if __name__ == "__main__":
    serve({"code.review": review})
