#!/usr/bin/env bash
# schemathesis (from PyPI) in a virtualenv of its own, for the API conformance test.
#   scripts/schemathesis.sh install DIR → creates DIR (a venv) with schemathesis 4.x unless
#                                        it has it already, prints DIR/bin/schemathesis
set -euo pipefail
cmd=${1:?usage: schemathesis.sh install DIR}; dir=${2:?usage: schemathesis.sh install DIR}
case "$cmd" in
  install)
    if [ ! -x "$dir/bin/schemathesis" ]; then
      # Debian's python3 (python3-venv), not whatever python3 is first on PATH.
      /usr/bin/python3 -m venv "$dir" >&2
      "$dir/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4.32,<5" >&2
    fi
    "$dir/bin/schemathesis" --version >&2
    echo "$dir/bin/schemathesis"
    ;;
  *) echo "usage: schemathesis.sh install DIR" >&2; exit 2 ;;
esac
