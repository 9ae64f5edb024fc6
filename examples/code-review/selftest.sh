#!/usr/bin/env bash
# Proves the code-review agents work without the runtime: runs each agent once in
# --oneshot mode for each candidate (implementer -> tester -> reviewer -> security),
# prints every output and checks what each candidate must show:
#   candidate 1: a test fails, and the reviewer flags the leftover print
#   candidate 2: the tests pass, security flags eval
#   candidate 3: clean everywhere
# then drives the tester once over the stdio protocol (heartbeats + result) and shows
# MUSTER_FLAKY=first-task crashing the first process and sparing the restarted one.
# If the `jsonschema` module is installed, every input and output is also validated
# against its schema in schemas/. Exit 0 when everything holds.
set -euo pipefail
cd "$(dirname "$0")/../.."          # the repo root: paths below are relative to it
A=examples/code-review/agents
PY=${PYTHON:-python3}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/muster-selftest-XXXXXX")
ws=""
trap 'rm -rf "$OUT" ${ws:+"$ws"}' EXIT
unset MUSTER_FLAKY

# run AGENT SCHEMA_IN SCHEMA_OUT NAME: stdin JSON in $OUT/NAME.in, output to $OUT/NAME.out
run() {
  local agent=$1 name=$4
  "$PY" "$A/$agent.py" --oneshot < "$OUT/$name.in" > "$OUT/$name.out" 2> "$OUT/$name.err" || {
    echo "FAIL: $agent exited $? on $name"; cat "$OUT/$name.err"; exit 1; }
  echo "$2 $3 $name" >> "$OUT/contracts"
  printf '  %-10s %s\n' "$agent" "$(cat "$OUT/$name.out")"
}

for c in 1 2 3; do
  echo "== candidate $c"
  "$PY" - "$OUT" "$c" "$ws" <<'EOF'
import json, sys
out, c, ws = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spec = json.load(open("examples/code-review/input.json"))["spec"]
payload = {"spec": spec, "round": c}
if ws:
    prev = c - 1
    test = json.load(open(f"{out}/test-{prev}.out"))
    review = json.load(open(f"{out}/review-{prev}.out"))
    security = json.load(open(f"{out}/security-{prev}.out"))
    payload["workspace"] = ws
    payload["feedback"] = test["failures"] + review["findings"] + security["findings"]
else:
    payload["feedback"] = []
json.dump(payload, open(f"{out}/implement-{c}.in", "w"))
EOF
  run implementer code-change code-result "implement-$c"
  ws=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["workspace"])' "$OUT/implement-$c.out")
  "$PY" -c 'import json,sys; json.dump({"workspace": sys.argv[1]}, open(sys.argv[2], "w"))' "$ws" "$OUT/test-$c.in"
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); json.dump({"workspace": r["workspace"], "files": r["files"]}, open(sys.argv[2], "w"))' \
    "$OUT/implement-$c.out" "$OUT/review-$c.in"
  cp "$OUT/review-$c.in" "$OUT/security-$c.in"
  run tester test-request test-report "test-$c"
  run reviewer review-request review-report "review-$c"
  run security review-request security-report "security-$c"
done

echo "== expectations"
"$PY" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
load = lambda n: json.load(open(f"{out}/{n}.out"))
problems = []
def expect(ok, what):
    print(("  ok   " if ok else "  FAIL ") + what)
    if not ok:
        problems.append(what)
impl = [load(f"implement-{c}") for c in (1, 2, 3)]
test = [load(f"test-{c}") for c in (1, 2, 3)]
rev = [load(f"review-{c}") for c in (1, 2, 3)]
sec = [load(f"security-{c}") for c in (1, 2, 3)]
expect([i["candidate"] for i in impl] == [1, 2, 3], "the implementer applied candidates 1, 2, 3")
expect(len({i["workspace"] for i in impl}) == 1, "all rounds worked in the same workspace")
expect(test[0]["failed"] >= 1, "candidate 1: a unit test fails")
expect(any(f["rule"] == "leftover-print" for f in rev[0]["findings"]) and rev[0]["errors"] >= 1,
       "candidate 1: the reviewer flags the leftover print as an error")
expect(test[1]["failed"] == 0 and test[1]["total"] > 0, "candidate 2: the tests pass")
expect(any(f["rule"] == "eval-exec" for f in sec[1]["findings"]), "candidate 2: security flags eval")
expect(test[2]["failed"] == 0 and test[2]["total"] > 0 and rev[2]["findings"] == [] and sec[2]["findings"] == [],
       "candidate 3: clean everywhere")
for c in range(3):
    done = test[c]["failed"] == 0 and rev[c]["errors"] == 0 and len(sec[c]["findings"]) == 0
    expect(done == (c == 2), f"candidate {c + 1}: the workflow's done condition is {done}")
try:
    import jsonschema, referencing
except ImportError:
    print("  (jsonschema not installed: contracts not validated)")
else:
    from referencing.jsonschema import DRAFT202012
    import glob, os
    resources = []
    for path in glob.glob("schemas/*.schema.json"):
        doc = json.load(open(path))
        resources.append((os.path.basename(path), DRAFT202012.create_resource(doc)))
    registry = referencing.Registry().with_resources(resources)
    def check(schema, doc, what):
        v = jsonschema.Draft202012Validator({"$ref": f"{schema}.schema.json"}, registry=registry)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]
        expect(not errors, f"{what} satisfies {schema}" + (f" ({errors})" if errors else ""))
    for line in open(f"{out}/contracts"):
        s_in, s_out, name = line.split()
        check(s_in, json.load(open(f"{out}/{name}.in")), f"{name} input")
        check(s_out, json.load(open(f"{out}/{name}.out")), f"{name} output")
sys.exit(1 if problems else 0)
EOF

echo "== stdio protocol and MUSTER_FLAKY=first-task"
task=$("$PY" -c 'import json,sys; print(json.dumps({"type":"task","task_id":"00000000-0000-7000-8000-000000000001","epoch":1,"attempt":1,"capability":"code.test","input":{"workspace":sys.argv[1]},"deadline_ms":30000}))' "$ws")
# Both tester processes are children of the same `sh`, as instances are children of muster.
MUSTER_FLAKY=first-task sh -c '
  echo "$1" | "$2" "$3/tester.py" > "$4/flaky-1.out" 2> "$4/flaky-1.err"; echo $? > "$4/flaky-1.rc"
  echo "$1" | "$2" "$3/tester.py" > "$4/flaky-2.out" 2> "$4/flaky-2.err"; echo $? > "$4/flaky-2.rc"
' sh "$task" "$PY" "$A" "$OUT"
echo "  first process:     exit $(cat "$OUT/flaky-1.rc"), $(wc -l < "$OUT/flaky-1.out") line(s) written"
echo "  restarted process: exit $(cat "$OUT/flaky-2.rc")"
sed 's/^/    /' "$OUT/flaky-2.out"
marker=$(sed -n 's/.*(marker \(.*\))$/\1/p' "$OUT/flaky-1.err"); [ -n "$marker" ] && rm -f "$marker"
"$PY" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
rc1, rc2 = (int(open(f"{out}/flaky-{i}.rc").read()) for i in (1, 2))
lines = [json.loads(l) for l in open(f"{out}/flaky-2.out") if l.strip()]
kinds = [l["type"] for l in lines]
ok = (rc1 != 0 and open(f"{out}/flaky-1.out").read() == "" and rc2 == 0
      and kinds[-1] == "result" and "heartbeat" in kinds
      and all(l["task_id"].endswith("0001") and l["epoch"] == 1 for l in lines)
      and lines[-1]["output"]["failed"] == 0)
print("  ok   the first process crashed without replying; the second heartbeat and answered"
      if ok else "  FAIL flaky/stdio behaviour")
sys.exit(0 if ok else 1)
EOF
echo "selftest passed"
