#!/usr/bin/env bash
# Screenshots an HTML run report in headless Chromium, to look at it as a reader would.
# Usage: bench/screenshot-report.sh [REPORT.html] [OUT.png]
#   without REPORT.html: prunes tiny-llama (KRP 50 % over 2 ranks) into a temporary folder and uses its report.
# Needs Debian's chromium (apt-get install -y chromium). The PNG is 1280 px wide, 2400 px tall.
set -euo pipefail
cd "$(dirname "$0")/.."
report="${1:-}"
png="${2:-/tmp/prune-dist-report.png}"
browser="$(command -v chromium || command -v chromium-browser || true)"
[[ -n "$browser" ]] || { echo "screenshot-report.sh: chromium not found (apt-get install -y chromium)" >&2; exit 1; }
if [[ -z "$report" ]]; then
  bin=.build/debug/prune-dist
  [[ -x "$bin" ]] || { echo "screenshot-report.sh: build prune-dist first (swift build)" >&2; exit 1; }
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  python3 -c "import json, random; random.seed(5); json.dump([[random.randrange(512) for _ in range(64)] for _ in range(16)], open('$work/calib.json', 'w'))"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
  nice -n 10 mpirun --oversubscribe -n 2 "$bin" prune --model ../shared/fixtures/tiny-llama --out "$work/out" --method krp --sparsity 0.5 \
    --calib "$work/calib.json" --samples 16 --seqlen 64 --ignore 're:.*down_proj' --log-level warning >/dev/null
  report="$work/out/prune-report.html"
fi
[[ -f "$report" ]] || { echo "screenshot-report.sh: no such report $report" >&2; exit 1; }
nice -n 10 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot="$png" --window-size=1280,2400 \
  "file://$(realpath "$report")" 2>/dev/null
echo "$png ($(stat -c %s "$png") bytes) from $report"
