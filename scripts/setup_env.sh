#!/usr/bin/env bash
# Create (or update) an isolated environment in .venv with everything recbole_promptmm and its tests need.
# Usage: bash scripts/setup_env.sh [PYTHON]   (default python3.11, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# recbole 1.2.1 pins ray<=2.6.3 (unusable with numpy 2): install it without its dependency list.
.venv/bin/python -m pip install -q --no-deps recbole==1.2.1
.venv/bin/python -m pip install -q --no-deps -e .
echo "environment ready: $(pwd)/.venv"
