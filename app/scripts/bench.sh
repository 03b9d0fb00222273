#!/usr/bin/env bash
# Benchmarks counter-app's group commit against the naive baseline, on this machine, now.
#
#   app/scripts/bench.sh [DURATION] [CONCURRENCY]        (defaults: 10s 64)
#
# Builds the release binaries, then for each storage mode starts a fresh counter-app on
# 127.0.0.1 with its visits file in a new directory under $BENCH_DIR (default /tmp; it must
# be on a real disk: on tmpfs fsync costs nothing and the comparison is meaningless), loads
# it with counter-load, stops it with SIGTERM and checks the file holds the count.
set -euo pipefail

duration=${1:-10s}
concurrency=${2:-64}
bench_dir=${BENCH_DIR:-/tmp}
port=${BENCH_PORT:-18080}
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}/release

cargo build --release -p counter-app --manifest-path "$root/Cargo.toml" >&2

echo "# $(date -u +%FT%TZ) on $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# visits files under $bench_dir: $(df -T "$bench_dir" | awk 'NR==2 {print $2 " on " $1}')"

for storage in group-commit naive; do
    dir=$(mktemp -d "$bench_dir/counter-bench.XXXXXX")
    "$target/counter-app" --listen "127.0.0.1:$port" --visits-file "$dir/visits" \
        --storage "$storage" >"$dir/log" 2>&1 &
    app=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
        sleep 0.1
    done
    echo
    echo "## --storage $storage"
    "$target/counter-load" --url "http://127.0.0.1:$port/" --concurrency "$concurrency" \
        --duration "$duration"
    curl -s "http://127.0.0.1:$port/metrics" |
        awk '/^counter_app_commits_total /{c=$2} /^counter_app_commit_batch_visits_sum /{v=$2}
             END {if (c > 0) printf "commits    %d, %.1f visits per commit\n", c, v / c}'
    kill -TERM "$app"
    wait "$app" && status=0 || status=$?
    echo "stopped    exit $status; $dir/visits holds $(cat "$dir/visits")"
    rm -rf "$dir"
    port=$((port + 1))
done
