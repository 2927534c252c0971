// The planner's cost model: memory per rank and step time of one training layout, from the
// model's shapes and a cluster's measured (or stated) speeds. Nothing in it is fitted to step
// times: GEMMs run at the cluster's rate for their shape, element-wise passes at its streaming
// bandwidth, and each collective costs an alpha-beta model of its bytes on a ring.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "plan/cluster.h"

namespace tessera::plan {

struct Layout {
  int dp = 1;
  int tp = 1;
  int64_t micro = 1;  // sequences per forward/backward on a rank
  int zero = 0;       // optim.zero
  bool sequence_parallel = false;
};

// What is trained: the model, the global batch (sequences) and the sequence length.
struct Workload {
  core::ModelConfig model;
  int64_t global_batch = 1;
  int64_t seq_len = 1;
  double bucket_mb = 25.0;  // the gradient reducer's bucket cap
};

// One GEMM C(m x n) = A(m x k) B(k x n), counted `count` times per step on a rank.
struct Gemm {
  int64_t m = 0, n = 0, k = 0;
  double count = 0;
};

struct Prediction {
  Layout layout;
  // Bytes per rank.
  double weights = 0, grads = 0, optimizer = 0, activations = 0;
  double memory() const { return weights + grads + optimizer + activations; }
  // Seconds per step on a rank (the step is as long as its slowest rank; all ranks are alike).
  double gemm_s = 0;         // forward and backward GEMMs, attention's included
  double elementwise_s = 0;  // layernorm, residual, softmax, GELU, cross-entropy passes
  double tp_comm_s = 0;      // the tp all-reduces (or reduce-scatter/all-gather pairs)
  double dp_comm_s = 0;      // the dp reduction left over after backward, and ZeRO's gather
  double optimizer_s = 0;    // zeroing, clipping and AdamW passes over the arena
  double step_s() const { return gemm_s + elementwise_s + tp_comm_s + dp_comm_s + optimizer_s; }
  bool fits = true;
  std::string why_not;  // divisibility or memory, when it cannot run
};

// Ring collectives over p ranks on `link`: time for a buffer of `bytes` per rank.
double all_reduce_s(double bytes, int p, const Link& link);
double reduce_scatter_s(double bytes, int p, const Link& link);  // bytes: the whole buffer
double all_gather_s(double bytes, int p, const Link& link);      // bytes: the whole buffer

// The GEMMs of one step on a rank of `layout` (forward and the two backward products of each
// linear, attention's score and value products, the tied LM head).
std::vector<Gemm> step_gemms(const Workload& w, const Layout& layout);
// Parameters held by one tp rank (its shards plus the replicated ones).
double local_params(const core::ModelConfig& m, int tp);

// Model FLOPs of one training step of the whole job (6 per parameter per token, attention
// included: models::Gpt::flops_per_token), for MFU.
double step_model_flops(const Workload& w);
// Model FLOP utilisation of a step of `seconds` on `devices` devices against the peak.
double mfu(const Workload& w, const Cluster& cluster, int devices, double seconds);

// Memory and step time of `layout`; fits = false (with why_not) when a divisibility rule of the
// grid or the device memory rules it out.
Prediction predict(const Workload& w, const Cluster& cluster, const Layout& layout);

}  // namespace tessera::plan
