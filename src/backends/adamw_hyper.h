// AdamW's hyperparameters for one step, shared by the CPU and CUDA AdamW kernels and the Backend.
#pragma once

#include <cstdint>

namespace tessera::backends {

struct AdamWHyper {
  float lr;  // this step's learning rate (after the schedule)
  float beta1;
  float beta2;
  float eps;
  float weight_decay;
  int64_t step;  // 1-based: the first update uses step = 1
};

}  // namespace tessera::backends
