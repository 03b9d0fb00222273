#!/usr/bin/env bash
# Checks that the template works the way policies/README.md tells an author to use it:
# its native tests pass, it builds to a component, and `stsguard eval` runs it —
# allowing (and mutating) a small StatefulSet, denying one with too many replicas.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target="$root/target/template"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$here"
# No debug info for the template's test build: it only has to pass, and debug info for
# its dependencies is most of the disk it would take.
CARGO_PROFILE_DEV_DEBUG=false cargo test --quiet --target-dir "$target"
cargo build --quiet --release --target wasm32-wasip2 --target-dir "$target"
module="$target/wasm32-wasip2/release/my_policy.wasm"

cat > "$work/my.yaml" <<YAML
policies:
  - name: my-policy
    module: $module
    settings: {maxReplicas: 5, minReadySeconds: 10}
YAML
# STSGUARD names an already built binary (`./dev test` passes the one its test build
# made); otherwise build it, as an author following the guide would.
if [ -n "${STSGUARD:-}" ]; then
  stsguard=("$STSGUARD")
else
  stsguard=(cargo run --quiet --manifest-path "$root/Cargo.toml" -p stsguard-webhook --bin stsguard --)
fi

"${stsguard[@]}" eval --config "$work/my.yaml" "$root/deploy/examples/lab-statefulset.yaml" > "$work/out.yaml"
grep -q "minReadySeconds: 10" "$work/out.yaml" || { echo "template check: minReadySeconds was not set" >&2; exit 1; }

sed 's/replicas: 3/replicas: 50/' "$root/deploy/examples/lab-statefulset.yaml" > "$work/big.yaml"
set +e
"${stsguard[@]}" eval --config "$work/my.yaml" "$work/big.yaml" > /dev/null 2> "$work/err.txt"
code=$?
set -e
if [ "$code" != 1 ] || ! grep -q "policy my-policy denied" "$work/err.txt"; then
  echo "template check: expected a denial (exit 1), got exit $code:" >&2
  cat "$work/err.txt" >&2
  exit 1
fi
echo "template check: the template builds, tests, mutates and denies as documented"
