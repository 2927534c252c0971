// AdamW over the parameter arena and global grad-norm clipping.
#include "optim/optimizer.h"

#include <cmath>
#include <cstring>

#include "backends/backend.h"
#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/gradient_reducer.h"

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
      owned_(owned),
      segments_(shard_segments(params, owned)) {}

const core::Tensor& AdamW::m() const {
  TESSERA_ASSERT(!sharded_ || full_,
                 "reading the full AdamW moments (a sharded optimizer has them only after "
                 "materialise_full)");
  return sharded_ ? full_m_ : m_;
}

const core::Tensor& AdamW::v() const {
  TESSERA_ASSERT(!sharded_ || full_,
                 "reading the full AdamW moments (a sharded optimizer has them only after "
                 "materialise_full)");
  return sharded_ ? full_v_ : v_;
}

void AdamW::materialise_full(parallel::GradientReducer* gather) {
  TESSERA_ASSERT(sharded_, "materialising full AdamW moments (the optimizer must be sharded)");
  full_m_ = backend_.zeros({params_.total_local_numel()});
  full_v_ = backend_.zeros({params_.total_local_numel()});
  full_ = true;
  int64_t at = 0;
  for (const parallel::Piece& p : owned_) {
    std::memcpy(full_m_.f32() + p.begin, m_.f32() + at, p.size() * sizeof(float));
    std::memcpy(full_v_.f32() + p.begin, v_.f32() + at, p.size() * sizeof(float));
    at += p.size();
  }
  if (gather != nullptr) {
    gather->all_gather_owned(full_m_);
    gather->all_gather_owned(full_v_);
  }
}

void AdamW::adopt_full() {
  TESSERA_ASSERT(sharded_ && full_,
                 "adopting full AdamW moments (a sharded optimizer, after materialise_full)");
  int64_t at = 0;
  for (const parallel::Piece& p : owned_) {
    std::memcpy(m_.f32() + at, full_m_.f32() + p.begin, p.size() * sizeof(float));
    std::memcpy(v_.f32() + at, full_v_.f32() + p.begin, p.size() * sizeof(float));
    at += p.size();
  }
  release_full();
}

void AdamW::release_full() {
  full_m_ = core::Tensor();
  full_v_ = core::Tensor();
  full_ = false;
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
