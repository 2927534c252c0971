#!/usr/bin/env bash
# On a lent GPU machine (docs/CUDA.md): runs every CUDA test packed by scripts/gpu_bundle.sh and
# prints a short table last. Logs go to $OUT (the device tool's return folder) when set. Exits
# non-zero when any GPU test fails or cannot run (no GPU here counts as a failure: this script
# exists to check the GPU path).
#   tar -xJf gpu-bundle.tar.xz && bash gpu-bundle/gpu_check.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/tessera-gpu}
mkdir -p "$out"
# The GPU image's CUDA libraries: its toolkit, and the pip wheels beside its PyTorch.
wheels=$(python3 -c "import glob, os, nvidia; print(':'.join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], '*', 'lib')))))" 2>/dev/null)
export LD_LIBRARY_PATH="$here/lib:${wheels}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$out/gpu.txt"
summary=()
failed=0
"$here/bin/tessera_cuda_tests" --gtest_output=xml:"$out/cuda_tests.xml" > "$out/cuda_tests.log" 2>&1
rc=$?
((rc == 0)) || failed=1
summary+=("tessera_cuda_tests: exit $rc, $(grep -E '^\[  (PASSED|FAILED) ' "$out/cuda_tests.log" | tr '\n' ' ')")
if [[ -x "$here/bin/tessera_cuda_mpi_tests" && -d "$here/openmpi" ]]; then
  export OPAL_PREFIX="$here/openmpi" OPAL_LIBDIR="$here/openmpi/lib" OPAL_PKGDATADIR="$here/openmpi/share/openmpi"
  export PATH="$here/openmpi/bin:$PATH" OMPI_MCA_mca_base_component_path="$here/openmpi/lib/openmpi3"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  for np in 1 2 4; do
    orterun --oversubscribe -n $np -x LD_LIBRARY_PATH "$here/bin/tessera_cuda_mpi_tests" \
      > "$out/cuda_mpi_np$np.log" 2>&1
    rc=$?
    ((rc == 0)) || failed=1
    summary+=("tessera_cuda_mpi_tests np $np: exit $rc")
  done
fi
grep -E '^\[  FAILED  \]' "$out"/*.log | head -40
printf '%s\n' "${summary[@]}"
if ((failed)); then
  echo "gpu_check: FAILED (a GPU test failed or could not run; logs in $out)"
  exit 1
fi
echo "gpu_check: every GPU test passed"
