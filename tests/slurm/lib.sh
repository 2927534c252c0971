# Shared helpers for the Slurm tests (sourced): the app-test helpers (tests/apps/lib.sh) plus job
# submission and polling on the local cluster of scripts/slurm/local-cluster.sh, which ctest
# brings up before these tests (fixture slurm_cluster). Run one by hand after
# `scripts/slurm/local-cluster.sh up`: TESSERA_BIN=build/apps TESSERA_ROOT=. bash tests/slurm/<name>_test.sh
source "$(dirname "${BASH_SOURCE[0]}")/../apps/lib.sh"
export SLURM_CONF=${TESSERA_SLURM_DIR:-/var/tmp/tessera-slurm}/slurm.conf
SLURM_SCRIPTS=$TESSERA_ROOT/scripts/slurm
# The tests' own mpirun runs, for comparison with the same run under Slurm.
mpirun=(mpirun --oversubscribe --bind-to none)

# require_cluster: fails the test (never skips it) unless the local cluster answers.
require_cluster() {
  if ! command -v sbatch > /dev/null || ! [[ -s $SLURM_CONF ]] ||
    ! timeout 20 scontrol ping 2> /dev/null | grep -q 'is UP'; then
    fail "no local Slurm at $SLURM_CONF: run scripts/slurm/local-cluster.sh up (ctest does)"
    finish
    exit 1
  fi
}

# submit ARGS...: sbatch ARGS from $WORK (so %x-%j.out lands there); prints the job id.
submit() {
  sbatch --parsable --chdir="$WORK" "$@"
}

# wait_job ID [SECONDS]: polls `scontrol show job` (not sbatch --wait: it polls slowly) until the
# job ends, and prints its final state and exit code ("COMPLETED 0:0"). On time-out cancels it.
wait_job() {
  local id=$1 limit=${2:-300} i line state code
  for ((i = 0; i < limit * 5; i++)); do
    line=$(scontrol show job -o "$id" 2> /dev/null) || line=""
    state=$(grep -o 'JobState=[A-Z_]*' <<< "$line" | cut -d= -f2)
    code=$(grep -o ' ExitCode=[0-9:]*' <<< "$line" | cut -d= -f2)
    case "$state" in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED)
        echo "$state $code"
        return 0
        ;;
    esac
    sleep 0.2
  done
  scancel "$id" 2> /dev/null
  echo "TIMEOUT-IN-TEST ${state:-unknown}"
}

# job_output NAME ID: the job's %x-%j.out file.
job_output() { echo "$WORK/$1-$2.out"; }
