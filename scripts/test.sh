#!/usr/bin/env bash
# `npm test`: set up what is missing, lint and format-check, then every suite against private
# services the runner starts and stops (never the machine's own RabbitMQ or PostgreSQL).
# `npm test -- unit native` runs only those suites.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: lint"
npx --no-install eslint .
npx --no-install prettier --check . >/dev/null || { npx --no-install prettier --check .; exit 1; }
exec node dist/test/run.js "$@"
