#!/usr/bin/env bash
# `npm run bench`: the same idempotent set-up as `npm test` (packages, npm ci, native and TypeScript
# builds), then the benchmark suite against private services it starts and stops itself.
# Arguments go to the runner: `npm run bench -- --only 2,7`, `--quick`, `--json`, `--out FILE`,
# `--profile DIR` (see bench/run.ts). Results: a table on stdout, JSON in dist/bench/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/bench/run.js "$@"
