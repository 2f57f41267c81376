#!/usr/bin/env bash
# One entry point for developers and CI, on a fresh machine too:
#   bash tools/dev.sh test [pytest args]     set up, build, run the test suite
#   bash tools/dev.sh condense [args]        set up, build, run the condensation main job
#   bash tools/dev.sh bench [pytest args]    set up, build, run the benchmarks
#   bash tools/dev.sh setup                  only create the venv and build the extension
# Set-up = a virtual environment (DSA_FAST_VENV, default .venv in the repo) with the pinned torch
# (DSA_FAST_TORCH, default torch==2.13.0: from PyPI's index that is the CUDA build on Linux; add
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU build) and
# requirements-dev.txt, then the extension built in place, then this clone installed into the venv
# as an editable package, so a script in any folder run by the venv's python imports it.
# Re-running reuses the venv while its pins are unchanged.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${DSA_FAST_VENV:-$root/.venv}
torch_spec=${DSA_FAST_TORCH:-torch==2.13.0}
py=${PYTHON:-python3}

setup() {
  local stamp="$venv/.dsa_fast-stamp" want
  want="$(cat "$root/requirements-dev.txt") $torch_spec $("$py" --version 2>&1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "dsa_fast dev: creating $venv with $torch_spec"
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$torch_spec" -r "$root/requirements-dev.txt" \
      2> >(grep -v "is ignored" >&2)
    printf '%s' "$want" >"$stamp"
  fi
  # One build folder per torch, so switching venvs never mixes objects.
  local tag
  tag=$("$venv/bin/python" -c "import torch; print('torch-' + torch.__version__.replace('+', '-'))")
  (cd "$root" && MAX_JOBS=${MAX_JOBS:-$(nproc)} "$venv/bin/python" setup.py -q build_ext --inplace --build-temp "build/$tag")
  install_editable
}

# The venv's dsa_fast is this clone: an editable install in setuptools' compat mode, i.e. a .pth
# line that puts $root on the venv's sys.path (plus the metadata and the dsa-condense script). A
# path entry, not an import hook: a script run in the folder that holds a clone named dsa_fast
# finds that root folder first, as a namespace portion, and Python still takes the regular package
# found later on the path. It builds nothing (DSA_FAST_NO_EXT=1): pip's editable build runs in a
# temporary folder that ccache cannot reuse, and the extension built in place above is a file of
# $root/dsa_fast. Skipped when the venv already points here.
install_editable() {
  if ! "$venv/bin/python" - "$root" 2>/dev/null <<'PY'; then
import pathlib, sys, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
sys.exit(not any(p.read_text().strip() == sys.argv[1] for p in site.glob("__editable__.dsa_fast-*.pth")))
PY
    (cd "$root" && DSA_FAST_NO_EXT=1 "$venv/bin/python" -m pip install -q --disable-pip-version-check \
      --no-build-isolation --no-deps --config-settings editable_mode=compat -e . 2> >(grep -v "is ignored" >&2))
  fi
}

cmd=${1:-test}
shift || true
case "$cmd" in
  setup) setup ;;
  test) setup && cd "$root" && exec "$venv/bin/python" -m pytest -q tests "$@" ;;
  condense) setup && cd "$root" && exec "$venv/bin/python" -m dsa_fast.condense "$@" ;;
  bench) setup && cd "$root" && exec "$venv/bin/python" -m pytest -q benchmarks "$@" ;;
  *) echo "usage: bash tools/dev.sh {setup|test|condense|bench} [args...]" >&2; exit 2 ;;
esac
