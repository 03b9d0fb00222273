#!/usr/bin/env bash
# From an empty folder to a served custom policy, for each language, with the
# five commands policies/README.md gives an author:
#
#   stsguard new demo --lang LANG && cd demo && stsguard build && stsguard test
#   stsguard serve --config stsguard.yaml
#
# then an AdmissionReview through the served policy: a lab StatefulSet must come
# back with spec.minReadySeconds set. Each template's native unit tests run too
# (cargo test, python3 -m unittest, npm test). Python and JavaScript policies are then made
# to raise, loop and allocate without bound on some objects (see `misbehave`). Usage: check.sh [LANG ...] (default: all
# three). STSGUARD names the binary; the toolchains must be on PATH (./dev test
# installs them with toolchains.sh). CARGO_TARGET_DIR, when set, is where the
# Rust project builds (shared with the workspace's wasm builds' dependencies).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
stsguard=${STSGUARD:?STSGUARD must name the stsguard binary}
work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# POSTs the lab review to URL trusting CA, and checks the answer's patch.
check_served() {
  python3 - "$1" "$2" "$root/webhook/tests/fixtures/reviews/lab-statefulset.create.json" <<'PY'
import base64, json, ssl, sys, time, urllib.request
url, ca, review = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read()
context = ssl.create_default_context(cafile=ca)
for _ in range(600):  # up to a minute for the policy to compile
    try:
        urllib.request.urlopen(url + "/readyz", context=context, timeout=2)
        break
    except Exception:
        time.sleep(0.1)
request = urllib.request.Request(url + "/mutate", data=review, headers={"Content-Type": "application/json"})
response = json.load(urllib.request.urlopen(request, context=context, timeout=10))["response"]
patch = json.loads(base64.b64decode(response.get("patch", "")) or "[]")
wanted = {"op": "add", "path": "/spec/minReadySeconds", "value": 10}
if not response["allowed"] or wanted not in patch:
    sys.exit(f"served policy: expected an allowed review with {wanted}, got {response}")
PY
}

# A policy that raises, loops or allocates without bound on some objects must fail
# only those evaluations, each with a clear reason; interpreted guests too.
misbehave() {
  case $1 in
    python) cat >>policy.py <<'PY'


_original = policy._evaluate


def _misbehave(request, settings):
    name = request.object["metadata"]["name"]
    if name == "raise":
        raise ZeroDivisionError("boom")
    if name == "loop":
        while True:
            pass
    if name == "allocate":
        hog = []
        while True:
            hog.append(bytearray(16 << 20))
    return _original(request, settings)


policy._evaluate = _misbehave
PY
      ;;
    javascript) cat >>policy.js <<'JS'

const original = policy.evaluateFn;
policy.evaluateFn = (request, settings) => {
  const name = request.object.metadata.name;
  if (name === "raise") throw new Error("boom");
  if (name === "loop") for (;;) {}
  if (name === "allocate") {
    const hog = [];
    // 16 MiB at a time: past the 64Mi limit in a few steps, well inside the
    // 1 s deadline even on a loaded machine.
    for (;;) hog.push(new ArrayBuffer(16 << 20));
  }
  return original(request, settings);
};
JS
      ;;
    *) return 0 ;;
  esac
  echo "== $1: a policy that raises, loops and allocates without bound" >&2
  "$stsguard" build >/dev/null
  for name in raise loop allocate web; do
    sed "s/name: web$/name: $name/" examples/statefulset.yaml
    echo ---
  done >"$work/misbehave.yaml"
  set +e
  "$stsguard" eval --policy "build/demo.wasm" -o json "$work/misbehave.yaml" >"$work/misbehave.json"
  code=$?
  set -e
  [ "$code" = 1 ] || { echo "misbehaving $1 policy: expected exit 1 (denied), got $code" >&2; exit 1; }
  python3 - "$work/misbehave.json" <<'PY'
import json, re, sys
objects = {o["object"].split("/")[-1]: o for o in json.load(open(sys.argv[1]))["objects"]}
expected = {"raise": r"returned an error: (ZeroDivisionError|Error): boom", "loop": r"timed out after",
            "allocate": r"[Mm]emory"}
for name, pattern in expected.items():
    run = objects[name]["policies"][0]
    if run["result"] != "failed" or not re.search(pattern, run.get("error", "")):
        sys.exit(f"misbehaving policy on {name}: expected a failure matching /{pattern}/, got {run}")
    print(f"  {name}: {run['error'][:100]}", file=sys.stderr)
if objects["web"]["policies"][0]["result"] != "mutated":
    sys.exit(f"the other objects must still be evaluated: {objects['web']}")
PY
}

# The template's own unit tests, in the language's usual runner (no wasm).
native_tests() {
  echo "== $1: the template's native unit tests" >&2
  case $1 in
    rust) CARGO_PROFILE_DEV_DEBUG=false cargo test --quiet >&2 ;;
    python) python3 -m unittest >&2 ;;
    javascript) npm test --silent >&2 ;;
  esac
}

languages=("$@")
[ ${#languages[@]} -gt 0 ] || languages=(rust python javascript)
port=18900
for lang in "${languages[@]}"; do
  port=$((port + 1))
  echo "== $lang: new, build, test, serve" >&2
  mkdir -p "$work/$lang" && cd "$work/$lang"
  "$stsguard" new demo --lang "$lang" 2>/dev/null
  cd demo
  component=$("$stsguard" build)
  "$stsguard" test
  native_tests "$lang"
  "$stsguard" serve --config stsguard.yaml --listen "127.0.0.1:$port" --tls-dir "$work/tls" \
    --drain-delay 0s --log warn 2>"$work/serve.log" &
  server=$!
  check_served "https://127.0.0.1:$port" "$work/tls/ca.crt" || { cat "$work/serve.log" >&2; exit 1; }
  kill "$server" && wait "$server" 2>/dev/null || true
  server=
  echo "== $lang: $component built, tested and served" >&2
  misbehave "$lang"
done
