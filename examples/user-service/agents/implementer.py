#!/usr/bin/env python3
"""implementer: capability `code.implement` (input `implement-request`, output
`implement-result`), oneshot mode.

Stands in for a coding model given one slice of `spec/user_service.md`. It writes the
slice's methods into `src/user_service/service.py` in the workspace: if the file exists
(another implementer already wrote `UserService`), it adds its methods to that class and
says so (`built_on`); otherwise it creates the class. Without muster's scopes, two
implementers running at once would each see no file and each create their own,
incompatible `UserService` (the essay's first failure mode); with the scope
`concept:UserService` the second waits for the first and builds on its result.

The output lists what it changed in `touched`, which the runtime checks against the
scope it was given (`MUSTER_SCOPE`).
"""

import json
import os
import re
import sys
import time

SLICES = {
    "accounts": [
        ("create_user", "self, name",
         "        self._next = getattr(self, '_next', 0) + 1\n"
         "        self._users = getattr(self, '_users', {})\n"
         "        self._users[self._next] = name\n"
         "        return self._next\n"),
        ("get_user", "self, user_id",
         "        return getattr(self, '_users', {}).get(user_id)\n"),
    ],
    "auth": [
        ("set_password", "self, user_id, password",
         "        import hashlib\n"
         "        self._hashes = getattr(self, '_hashes', {})\n"
         "        self._hashes[user_id] = hashlib.sha256(('salt:' + password).encode()).hexdigest()\n"),
        ("check_password", "self, user_id, password",
         "        import hashlib\n"
         "        want = getattr(self, '_hashes', {}).get(user_id)\n"
         "        return want == hashlib.sha256(('salt:' + password).encode()).hexdigest()\n"),
    ],
}

PATH = os.path.join("src", "user_service", "service.py")


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def main():
    request = json.load(sys.stdin)
    workspace = request.get("workspace")
    piece = request.get("slice")
    if piece not in SLICES:
        fail(f"unknown slice {piece!r}; expected one of {sorted(SLICES)}")
    scope = json.loads(os.environ.get("MUSTER_SCOPE") or "{}")
    print(f"implementing slice {piece} within scope {scope}", file=sys.stderr)
    target = os.path.join(workspace, PATH)
    # Reading the current state of the class and writing the new one is not atomic: the
    # scope lease is what keeps another implementer out in between.
    existing = None
    if os.path.exists(target):
        with open(target) as f:
            existing = f.read()
    time.sleep(float(os.environ.get("IMPLEMENTER_DELAY", "0.5")))
    if existing is None:
        body = "class UserService:\n    \"\"\"Owns users (spec/user_service.md).\"\"\"\n"
    else:
        body = existing
    have = set(re.findall(r"^    def (\w+)\(", body, re.M))
    for name, args, code in SLICES[piece]:
        if name not in have:
            body += f"\n    def {name}({args}):\n{code}"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w") as f:
        f.write(body)
    methods = re.findall(r"^    def (\w+)\(", body, re.M)
    json.dump(
        {
            "slice": piece,
            "built_on": existing is not None,
            "classes": len(re.findall(r"^class UserService\b", body, re.M)),
            "methods": methods,
            "touched": [PATH, "concept:UserService"],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
