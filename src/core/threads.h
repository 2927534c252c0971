// Thread settings per rank: OpenMP and OpenBLAS (the OpenMP build, so one pool) get
// threads = configured, or cores / node-local ranks. Spin-waiting threads fight on small
// machines, so OMP_WAIT_POLICY defaults to PASSIVE (set before the OpenMP runtime starts).
#pragma once

namespace tessera::core {

// Call first in main(), before MPI_Init and any OpenMP use. If OMP_WAIT_POLICY is unset, sets it
// to PASSIVE and re-executes the program so the OpenMP runtime reads it at start-up.
void prepare_thread_environment(int argc, char** argv);
// Sets OpenMP and BLAS threads; `requested` 0 means hardware cores / `local_ranks`.
int set_threads(int requested, int local_ranks);
int hardware_threads();

}  // namespace tessera::core
