#!/usr/bin/env bash
# Build every training corpus into the afx cache (platformdirs user cache, "afx/corpora/<name>").
# Usage: bash scripts/data/build_all.sh [--limit N]
# Long (hours for music_multitrack on a shared 2-core machine); run it in the background, e.g.
#   nohup nice -n 19 bash scripts/data/build_all.sh > /tmp/build_all.log 2>&1 &
# Idempotent and resumable: rerun after an interruption and finished work is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
# apt's package lists are needed by 'apt-get download'; fetch them once if they are missing.
apt-cache show freedoom > /dev/null 2>&1 || apt-get update
for corpus in music_mastered speech music_multitrack; do
    echo "=== $corpus ($(date -u +%H:%M:%S) UTC)"
    nice -n 19 "$PY" "scripts/data/build_${corpus}.py" "$@"
done
echo "=== done ($(date -u +%H:%M:%S) UTC)"
"$PY" - <<'PYEOF'
from afxcli import datasets
for name in datasets.available():
    for split, s in sorted(datasets.summary(name).items()):
        print(f"{name} {split}: {s['items']} items, {s['hours']:.2f} h, {s['groups']} groups")
PYEOF
