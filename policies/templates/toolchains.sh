#!/usr/bin/env bash
# Installs the pinned toolchains that build stsguard policies written in Python
# or JavaScript (policies/templates/python, policies/templates/javascript).
#
#   toolchains.sh python DIR       DIR/python: a virtualenv with componentize-py;
#                                  runs as DIR/python/bin/componentize-py
#   toolchains.sh javascript DIR   DIR/node: `npm ci` of the JavaScript template's
#                                  package.json and package-lock.json; runs as
#                                  DIR/node/node_modules/.bin/{rolldown,jco}
#
# Idempotent: a toolchain already installed at the pinned versions is left as it
# is (a second run takes well under a second). Writes progress to stderr and
# nothing to stdout. Needs python3 >= 3.9 (with venv or pip), or node >= 20.19
# with npm; everything else comes from PyPI or npm, by exact version.
#
# See BUILD.md beside this file for the build commands that use them.
set -euo pipefail

# Pinned versions. The JavaScript pins are in javascript/package.json and
# javascript/package-lock.json (componentize-js, jco, rolldown, and
# preview2-shim held at 0.25.0: 0.26.1 cannot read WIT files, "failed to get
# path metadata ... (os error 44)").
COMPONENTIZE_PY_VERSION=0.25.1
JS_PINS=(
  "@bytecodealliance/componentize-js@0.23.0"
  "@bytecodealliance/jco@1.35.0"
  "@bytecodealliance/preview2-shim@0.25.0"
  "rolldown@1.3.3"
)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf 'toolchains: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

usage() {
  printf 'usage: %s python|javascript DIR\n' "$0" >&2
  exit 2
}

python_toolchain() {
  local dir=$1/python
  local want="componentize-py $COMPONENTIZE_PY_VERSION"
  if [[ -x $dir/bin/componentize-py ]] && [[ $("$dir/bin/componentize-py" --version 2>/dev/null) == "$want" ]]; then
    say "$want already in $dir"
    return
  fi
  command -v python3 >/dev/null || die "python3 not found (3.9 or newer is needed)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); componentize-py needs 3.9 or newer"
  say "installing $want into $dir"
  rm -rf "$dir"
  if python3 -m venv "$dir" >&2 2>/dev/null; then
    "$dir/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
      "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
  else
    # No venv module (Debian without python3-venv): a plain folder and a
    # launcher that puts it on the path.
    say "python3 -m venv is not available; using pip install --target"
    rm -rf "$dir"
    python3 -m pip install --disable-pip-version-check --no-input --quiet \
      --target "$dir/lib" "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
    mkdir -p "$dir/bin"
    cat >"$dir/bin/componentize-py" <<EOF
#!/bin/sh
PYTHONPATH="$dir/lib\${PYTHONPATH:+:\$PYTHONPATH}" exec python3 -c 'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' "\$@"
EOF
    chmod +x "$dir/bin/componentize-py"
  fi
  local got
  got=$("$dir/bin/componentize-py" --version 2>&1) || die "componentize-py does not run: $got"
  [[ $got == "$want" ]] || die "installed $got, expected $want"
  say "installed $got: $dir/bin/componentize-py"
}

javascript_toolchain() {
  local dir=$1/node
  local template=$here/javascript
  command -v node >/dev/null || die "node not found (20.19 or newer is needed)"
  command -v npm >/dev/null || die "npm not found"
  node -e '
    const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 22 || (a === 22 && b >= 12) || (a === 20 && b >= 19) ? 0 : 1);
  ' || die "node is $(node --version); rolldown needs ^20.19 or >= 22.12"
  # The template's manifest and lock, named for the toolchain folder.
  local manifest lock
  manifest=$(sed 's/{{name}}/stsguard-policy-toolchain/g' "$template/package.json")
  lock=$(sed 's/{{name}}/stsguard-policy-toolchain/g' "$template/package-lock.json")
  if [[ -f $dir/package.json && -f $dir/package-lock.json && -x $dir/node_modules/.bin/jco ]] &&
    [[ $manifest == "$(cat "$dir/package.json")" && $lock == "$(cat "$dir/package-lock.json")" ]] &&
    installed_js_pins "$dir"; then
    say "JavaScript toolchain already in $dir (${JS_PINS[*]})"
    return
  fi
  say "installing ${JS_PINS[*]} into $dir"
  mkdir -p "$dir"
  rm -rf "$dir/node_modules"
  printf '%s\n' "$manifest" >"$dir/package.json"
  printf '%s\n' "$lock" >"$dir/package-lock.json"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  installed_js_pins "$dir" || die "npm ci in $dir did not install the pinned versions"
  say "installed: $dir/node_modules/.bin/jco $("$dir/node_modules/.bin/jco" --version 2>/dev/null)," \
    "$dir/node_modules/.bin/rolldown"
}

# Whether DIR/node_modules holds every pinned package at its version (the
# override of preview2-shim included: one copy, at the top).
installed_js_pins() {
  local dir=$1 pin name version
  for pin in "${JS_PINS[@]}"; do
    name=${pin%@*}
    version=${pin##*@}
    [[ -f $dir/node_modules/$name/package.json ]] || return 1
    [[ $(node -p "require(process.argv[1]).version" "$dir/node_modules/$name/package.json") == "$version" ]] || return 1
  done
}

[[ $# -eq 2 ]] || usage
lang=$1
dir=$2
[[ -n $dir ]] || usage
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

case $lang in
python | py) python_toolchain "$dir" ;;
javascript | js | node) javascript_toolchain "$dir" ;;
*) usage ;;
esac
