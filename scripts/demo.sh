#!/usr/bin/env bash
# `npm run demo`: set up what is missing, then play the demo on a private sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node bin/virtbus demo "$@"
