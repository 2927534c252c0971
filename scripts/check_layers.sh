#!/usr/bin/env bash
# Checks that every #include in src/ points down the library order (docs/DESIGN.md):
#   core -> backends -> params -> parallel -> {optim, models} -> {checkpoint, generate} ; data
#   -> train (-> serve)
# A file may include its own layer and the layers listed as below it here. Prints each upward
# include as file:line and exits 1 if there is any. Run by ctest (layers.includes_point_down).
set -euo pipefail
cd "$(dirname "$0")/../src"
declare -A below=(
  [core]=""
  [backends]="core"
  [params]="core backends"
  [parallel]="core backends params"
  [optim]="core backends params parallel"
  [models]="core backends params parallel"
  [plan]="core backends params parallel models"
  [data]="core"
  [checkpoint]="core backends params parallel optim models"
  [generate]="core backends params parallel models"
  [train]="core backends params parallel optim models data checkpoint generate"
  [serve]="core backends params parallel models generate data"
)
bad=0
for layer in */; do
  layer=${layer%/}
  if [[ -z ${below[$layer]+x} ]]; then
    echo "src/$layer: not in the layer table of scripts/check_layers.sh; add it" >&2
    bad=1
    continue
  fi
  allowed=" $layer ${below[$layer]} "
  while IFS=: read -r file line text; do
    target=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<< "$text")
    if [[ $allowed != *" $target "* ]]; then
      echo "src/$file:$line includes $target/, above $layer in the library order" >&2
      bad=1
    fi
  done < <(grep -rnE '^#include "[a-z_]+/' "$layer" || true)
done
# The model, trainer and generator reach kernels only through the Backend interface.
if grep -rnE '#include "backends/(cpu|cuda)/' models generate train optim checkpoint 2>/dev/null; then
  echo "the files above include a backend's kernels directly; call backends/backend.h" >&2
  bad=1
fi
if grep -rn '#if' models generate train 2>/dev/null | grep -v '#pragma'; then
  echo "model, generator and trainer code has no #if/#ifdef (pick code in CMake)" >&2
  bad=1
fi
[[ $bad == 0 ]] && echo "layers: every include points down the library order"
exit $bad
