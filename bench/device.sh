#!/usr/bin/env bash
# The device check (bench/device.py): images/s of training (augmentation in tf.data and in the model) and TTA
# inference, EfficientNetB0@256 and B5@384, TensorFlow and JAX, on whatever accelerator this machine has, in
# under 8 minutes; prints a table and the rows for bench/RESULTS.md.
#   bench/device.sh [--dry-run] [--budget SECONDS] [--models name:size:batch,...] [--backends tensorflow,jax]
# It installs nothing: it runs the project's .venv when there is one, else the machine's python3 (Kaggle/Colab
# images and GPU boxes have their own TensorFlow/JAX), and stops with one line naming what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
elif command -v python3 >/dev/null 2>&1; then
    PY=python3
else
    echo "device.sh: error: no Python: neither .venv/bin/python (make install) nor python3 on PATH" >&2
    exit 2
fi
exec "$PY" bench/device.py "$@"
