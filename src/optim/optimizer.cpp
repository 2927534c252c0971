// AdamW over the parameter arena and global grad-norm clipping.
#include "optim/optimizer.h"

#include <cmath>
#include <cstring>

#include "backends/backend.h"
#include "core/error.h"
#include "parallel/communicator.h"

namespace tessera::optim {

namespace {
backends::Backend& backend_or_cpu(backends::Backend* backend) {
  return backend ? *backend : backends::cpu_backend();
}
}  // namespace

double clip_grad_norm(const params::ParamSet& params, const core::Tensor& grads, double max_norm,
                      parallel::Communicator* tp_comm, backends::Backend* backend) {
  backends::Backend& be = backend_or_cpu(backend);
  // Sharded parameters contribute their local squares (summed over tp with tp > 1); replicated
  // ones hold identical gradients on every tp rank, so they are added once, after that sum.
  double sharded = 0, replicated = 0;
  for (int i = 0; i < params.size(); ++i) {
    const double sq = be.sum_squares(params.f32(grads, i), params.local_numel(i));
    (params.specs()[i].replicated() ? replicated : sharded) += sq;
  }
  if (tp_comm != nullptr && tp_comm->size() > 1) {
    tp_comm->all_reduce(&sharded, 1, parallel::ReduceOp::kSum);
  }
  const double norm = std::sqrt(sharded + replicated);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    be.scale_inplace(grads.f32(), scale, params.total_local_numel());
  }
  return norm;
}

std::vector<ShardSegment> shard_segments(const params::ParamSet& params,
                                         const std::vector<parallel::Piece>& owned) {
  std::vector<ShardSegment> out;
  int64_t moment_offset = 0;
  for (const parallel::Piece& range : owned) {
    for (int i = 0; i < params.size(); ++i) {
      const int64_t begin = std::max(range.begin, params.offset(i));
      const int64_t end = std::min(range.end, params.offset(i) + params.local_numel(i));
      if (begin < end) out.push_back({i, begin, end - begin, moment_offset + begin - range.begin});
    }
    moment_offset += range.size();
  }
  return out;
}

double clip_grad_norm_sharded(const params::ParamSet& params, const core::Tensor& grads,
                              const std::vector<ShardSegment>& segments, double max_norm,
                              parallel::Communicator* tp_comm, parallel::Communicator& dp_comm) {
  backends::Backend& be = backends::cpu_backend();
  // [0]: tp-sharded parameters' squares, [1]: tp-replicated ones' (counted once over tp).
  double sq[2] = {0, 0};
  for (const ShardSegment& s : segments) {
    sq[params.specs()[s.param].replicated() ? 1 : 0] +=
        be.sum_squares(grads.f32() + s.offset, s.count);
  }
  dp_comm.all_reduce(sq, 2, parallel::ReduceOp::kSum);
  if (tp_comm != nullptr && tp_comm->size() > 1) {
    tp_comm->all_reduce(&sq[0], 1, parallel::ReduceOp::kSum);
  }
  const double norm = std::sqrt(sq[0] + sq[1]);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (const ShardSegment& s : segments) be.scale_inplace(grads.f32() + s.offset, scale, s.count);
  }
  return norm;
}

AdamW::AdamW(const params::ParamSet& params, backends::Backend* backend)
    : params_(params),
      backend_(backend_or_cpu(backend)),
      m_(backend_.zeros({params.total_local_numel()})),
      v_(backend_.zeros({params.total_local_numel()})) {}

namespace {
int64_t owned_numel(const std::vector<parallel::Piece>& owned) {
  int64_t n = 0;
  for (const parallel::Piece& p : owned) n += p.size();
  return n;
}
}  // namespace

AdamW::AdamW(const params::ParamSet& params, const std::vector<parallel::Piece>& owned)
    : params_(params),
      backend_(backends::cpu_backend()),
      m_(backend_.zeros({owned_numel(owned)})),
      v_(backend_.zeros({owned_numel(owned)})),
      sharded_(true),
      segments_(shard_segments(params, owned)) {}

void AdamW::copy_owned_out(int param, int which, float* shard) const {
  TESSERA_ASSERT(sharded_ && param >= 0 && param < params_.size() && (which == 0 || which == 1),
                 "copying owned moments out (a sharded optimizer, a parameter index, m or v)");
  const float* moments = (which == 0 ? m_ : v_).f32();
  for (const ShardSegment& s : segments_) {
    if (s.param != param) continue;
    std::memcpy(shard + (s.offset - params_.offset(param)), moments + s.moment_offset,
                s.count * sizeof(float));
  }
}

void AdamW::copy_owned_in(int param, int which, const float* shard) {
  TESSERA_ASSERT(sharded_ && param >= 0 && param < params_.size() && (which == 0 || which == 1),
                 "copying owned moments in (a sharded optimizer, a parameter index, m or v)");
  float* moments = (which == 0 ? m_ : v_).f32();
  for (const ShardSegment& s : segments_) {
    if (s.param != param) continue;
    std::memcpy(moments + s.moment_offset, shard + (s.offset - params_.offset(param)),
                s.count * sizeof(float));
  }
}

void AdamW::step(const core::Tensor& weights, const core::Tensor& grads, double lr, int64_t step,
                 const core::OptimConfig& optim) {
  const backends::AdamWHyper h{static_cast<float>(lr),
                               static_cast<float>(optim.beta1),
                               static_cast<float>(optim.beta2),
                               static_cast<float>(optim.eps),
                               static_cast<float>(optim.weight_decay),
                               step};
  if (sharded_) {
    for (const ShardSegment& s : segments_) {
      backend_.adamw_update(weights.f32() + s.offset, grads.f32() + s.offset,
                            m_.f32() + s.moment_offset, v_.f32() + s.moment_offset, s.count, h,
                            params_.specs()[s.param].weight_decay);
    }
    return;
  }
  for (int i = 0; i < params_.size(); ++i) {
    backend_.adamw_update(params_.f32(weights, i), params_.f32(grads, i), params_.f32(m_, i),
                          params_.f32(v_, i), params_.local_numel(i), h,
                          params_.specs()[i].weight_decay);
  }
}

}  // namespace tessera::optim
