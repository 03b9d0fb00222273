#!/usr/bin/env bash
# From an empty folder to a served custom policy, for each language, with the
# five commands policies/README.md gives an author:
#
#   stsguard new demo --lang LANG && cd demo && stsguard build && stsguard test
#   stsguard serve --config stsguard.yaml
#
# then an AdmissionReview through the served policy: a lab StatefulSet must come
# back with spec.minReadySeconds set. Usage: check.sh [LANG ...] (default: all
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
  "$stsguard" serve --config stsguard.yaml --listen "127.0.0.1:$port" --tls-dir "$work/tls" \
    --drain-delay 0s --log warn 2>"$work/serve.log" &
  server=$!
  check_served "https://127.0.0.1:$port" "$work/tls/ca.crt" || { cat "$work/serve.log" >&2; exit 1; }
  kill "$server" && wait "$server" 2>/dev/null || true
  server=
  echo "== $lang: $component built, tested and served" >&2
done
