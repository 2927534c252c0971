// GPT-2 as a list of modules; see gpt.h. Shapes in comments are per rank.
#include "models/gpt.h"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "core/error.h"
#include "models/kv_cache.h"
#include "parallel/communicator.h"
#include "parallel/timeline.h"

namespace tessera::models {

using core::Tensor;

std::vector<params::ParamSpec> Gpt::param_specs(const core::ModelConfig& m) {
  const int64_t C = m.n_embd, V = m.vocab_size, Vp = m.padded_vocab_size();
  const float std = static_cast<float>(m.init_std);
  // Residual projections are scaled by 1/sqrt(2L) (GPT-2 paper, section 2.3).
  const float proj_std = static_cast<float>(m.init_std / std::sqrt(2.0 * m.n_layer));
  std::vector<params::ParamSpec> s;
  auto ln = [&](const std::string& name) {
    s.push_back({name + ".weight", {C}, -1, 1, params::Init::kOnes, 0, -1, false});
    s.push_back({name + ".bias", {C}, -1, 1, params::Init::kZeros, 0, -1, false});
  };
  // Token embedding: vocab-parallel rows; padding rows are zero and never reach the loss.
  s.push_back({"wte", {Vp, C}, 0, 1, params::Init::kNormal, std, V, true});
  s.push_back({"wpe", {m.max_seq_len, C}, -1, 1, params::Init::kNormal, std, -1, true});
  for (int l = 0; l < m.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l);
    ln(h + ".ln_1");
    // Column-parallel fused qkv: three blocks (q, k, v), each split over tp by heads.
    s.push_back({h + ".attn.qkv.weight", {3 * C, C}, 0, 3, params::Init::kNormal, std, -1, true});
    s.push_back({h + ".attn.qkv.bias", {3 * C}, 0, 3, params::Init::kZeros, 0, -1, false});
    // Row-parallel output projection: input dim split; bias replicated (added after the reduce).
    s.push_back({h + ".attn.proj.weight", {C, C}, 1, 1, params::Init::kNormal, proj_std, -1, true});
    s.push_back({h + ".attn.proj.bias", {C}, -1, 1, params::Init::kZeros, 0, -1, false});
    ln(h + ".ln_2");
    s.push_back({h + ".mlp.fc.weight", {4 * C, C}, 0, 1, params::Init::kNormal, std, -1, true});
    s.push_back({h + ".mlp.fc.bias", {4 * C}, 0, 1, params::Init::kZeros, 0, -1, false});
    s.push_back(
        {h + ".mlp.proj.weight", {C, 4 * C}, 1, 1, params::Init::kNormal, proj_std, -1, true});
    s.push_back({h + ".mlp.proj.bias", {C}, -1, 1, params::Init::kZeros, 0, -1, false});
  }
  ln("ln_f");
  return s;
}

double Gpt::flops_per_token(const core::ModelConfig& m, int64_t T) {
  // 6 FLOPs per parameter per token (forward 2, backward 4) over the non-embedding-lookup
  // parameters (the tied LM head is a real GEMM, so wte counts), plus attention scores and
  // values: 6 * 2 * L * C * T (PaLM, Chowdhery et al. 2022, appendix B).
  const double C = m.n_embd, L = m.n_layer, Vp = m.padded_vocab_size();
  const double per_layer = 12.0 * C * C + 13.0 * C;  // qkv, proj, fc, proj weights + biases + LNs
  const double n = L * per_layer + Vp * C;
  return 6.0 * n + 12.0 * L * C * static_cast<double>(T);
}

namespace {
backends::Backend& backend_or_cpu(backends::Backend* backend) {
  return backend ? *backend : backends::cpu_backend();
}
}  // namespace

Gpt::Gpt(const core::ModelConfig& model, int64_t B, int64_t T, parallel::Communicator* tp_comm,
         backends::Backend* backend, bool sequence_parallel, const Arenas& arenas, Purpose purpose,
         core::DType activations)
    : model_(model),
      B_(B),
      T_(T),
      C_(model.n_embd),
      L_(model.n_layer),
      V_(model.vocab_size),
      backend_(backend_or_cpu(backend)),
      own_tp_comm_(tp_comm ? nullptr
                           : std::make_unique<parallel::MpiCommunicator>(MPI_COMM_SELF, "tp")),
      tp_comm_(tp_comm ? tp_comm : own_tp_comm_.get()),
      tp_rank_(tp_comm_->rank()),
      tp_size_(tp_comm_->size()),
      seq_shards_(sequence_parallel && tp_size_ > 1 ? tp_size_ : 1),
      params_(param_specs(model), tp_rank_, tp_size_),
      weights_(arenas.weights.defined() ? arenas.weights
                                        : backend_.zeros({params_.total_local_numel()})),
      grads_(arenas.grads.defined()           ? arenas.grads
             : purpose == Purpose::kInference ? Tensor()
                                              : backend_.zeros({params_.total_local_numel()})),
      ctx_{backend_, *tp_comm_, params_, weights_, grads_, tp_rank_, tp_size_} {
  TESSERA_ASSERT(T <= model.max_seq_len, "building a GPT with T <= model.max_seq_len");
  ctx_.inference = purpose == Purpose::kInference;
  TESSERA_ASSERT(
      activations == core::DType::kF32 || (activations == core::DType::kBF16 && !ctx_.inference),
      "building a GPT with f32 activations, or bf16 ones for training");
  ctx_.act = activations;
  TESSERA_ASSERT(weights_.numel() == params_.total_local_numel() &&
                     weights_.device() == backend_.device() &&
                     (ctx_.inference ? !grads_.defined()
                                     : grads_.numel() == params_.total_local_numel() &&
                                           grads_.device() == backend_.device()),
                 "building a GPT on given arenas (f32, total_local_numel elements each, on the "
                 "backend's device)");
  ctx_.backward_poll = &backward_poll_;
  Vp_local_ = model.padded_vocab_size() / tp_size_;
  vocab_start_ = static_cast<int64_t>(tp_rank_) * Vp_local_;
  V_real_local_ = std::clamp<int64_t>(V_ - vocab_start_, 0, Vp_local_);
  TESSERA_ASSERT(T % seq_shards_ == 0,
                 "building a sequence-parallel GPT with T divisible by tp (train.seq_len)");
  const int64_t BT = B * T, C = C_, Cl = C / tp_size_, NHl = model.n_head / tp_size_;
  const int64_t BT_local = B * (T / seq_shards_);  // rows of the layernorm/residual regions

  ArenaPlan plan;
  plan.add(&encoded_, {BT_local, C}, ctx_.act);
  plan.add(&lnf_out_, {BT_local, C}, ctx_.act);
  if (seq_shards_ > 1) {
    plan.add(&seq_scratch_.full, {BT, C});
    plan.add(&seq_scratch_.dfull, {BT, C});
    ctx_.seq = &seq_scratch_;
  }
  if (ctx_.act != core::DType::kF32) {
    plan.add(&act_f32_, {BT, C});
    ctx_.act_f32 = &act_f32_;
    // The widest activation argument of one backend op: the MLP's hidden rows (B*T, 4C / tp).
    backend_.reserve_activation_scratch(BT * std::max(4 * Cl, C));
  }
  if (!ctx_.inference) {
    // Backward scratch, shared by the layers (one layer's backward runs at a time), and the
    // forward attention's workspace.
    plan.add(&dresidual_, {BT_local, C});
    plan.add(&scratch_.dln, {BT_local, C});
    plan.add(&scratch_.attention.dqkv, {BT, 3 * Cl});
    plan.add(&scratch_.attention.datty, {BT, Cl});
    plan.add(&scratch_.attention.workspace, {backend_.attention_workspace_size(B, T, Cl, NHl)});
    plan.add(&scratch_.mlp.dfch, {BT, 4 * Cl});
    plan.add(&scratch_.mlp.dfch_gelu, {BT, 4 * Cl});
  }

  embedding_ = std::make_unique<VocabParallelEmbedding>(ctx_, 0, C, vocab_start_, Vp_local_);
  // Decode runs the layers one after another, each reading only the one before's output, which
  // it no longer needs once its own first residual sum is made: an inference model's layers
  // share one set of activations (a training model keeps each layer's for backward).
  const int64_t layers_start = plan.mark();
  for (int l = 0; l < L_; ++l) {
    if (ctx_.inference) plan.rewind(layers_start);
    blocks_.push_back(
        std::make_unique<Block>(ctx_, plan, scratch_, 2 + Block::kParams * l, B, T, C, NHl));
    backward_names_.push_back("bwd h." + std::to_string(l));
  }
  const int nparams = params_.size();
  ln_f_ = std::make_unique<LayerNorm>(ctx_, plan, nparams - 2, BT_local, C);
  head_ = std::make_unique<LmHead>(ctx_, plan, embedding_->wte(), embedding_->dwte(), BT, C, V_,
                                   vocab_start_, Vp_local_);
  arena_ = plan.allocate(backend_);
  for (Tensor* t : {&tokens_, &targets_, &slots_, &positions_}) {
    *t = backend_.zeros({BT}, core::DType::kI32);
  }
}

Gpt::~Gpt() = default;

Tensor Gpt::param(const std::string& name) const {
  const int i = params_.index_of(name);
  TESSERA_ASSERT(i >= 0, ("looking up parameter " + name).c_str());
  return params_.view(weights_, i);
}

int64_t Gpt::allocated_bytes() const {
  return static_cast<int64_t>(weights_.bytes() + (grads_.defined() ? grads_.bytes() : 0) +
                              arena_.bytes());
}

Tensor Gpt::grad(const std::string& name) const {
  TESSERA_ASSERT(!ctx_.inference, "a model built for inference has no gradients");
  const int i = params_.index_of(name);
  TESSERA_ASSERT(i >= 0, ("looking up gradient " + name).c_str());
  return params_.view(grads_, i);
}

void Gpt::init_weights(uint64_t seed) {
  if (backend_.device() == core::Device::kCpu) {
    params_.initialise(weights_, seed);
    return;
  }
  const Tensor host = params_.make_twin();
  params_.initialise(host, seed);
  backend_.copy_to_device(weights_.raw(), host.raw(), host.bytes());
}

void Gpt::zero_grad() {
  TESSERA_ASSERT(!ctx_.inference, "a model built for inference has no gradients to zero");
  backend_.fill_zero(grads_.raw(), grads_.bytes());
}

const int32_t* Gpt::stage(Tensor& buffer, const int32_t* host, int64_t n) {
  backend_.copy_to_device(buffer.raw(), host, n * sizeof(int32_t));
  return buffer.data<int32_t>();
}

double Gpt::forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                    int64_t* n_valid) {
  TESSERA_ASSERT(!ctx_.inference,
                 "running GPT forward on a model built for inference (decode only); build it "
                 "with Purpose::kTrain");
  TESSERA_ASSERT(B <= B_ && T <= T_, "running GPT forward within the allocated B and T");
  TESSERA_ASSERT(T % seq_shards_ == 0, "running a sequence-parallel GPT on T divisible by tp");
  const int64_t BT = B * T;
  const int32_t* tok = stage(tokens_, tokens, BT);
  have_targets_ = targets != nullptr;
  const Rows rows{B, T, seq_shards_};
  last_rows_ = rows;
  embedding_->forward(encoded_, tok, rows);
  core::ConstAct x = encoded_;
  for (auto& block : blocks_) {
    block->forward(x, rows);
    x = block->out();
  }
  ln_f_->forward(lnf_out_, x, rows.n_local());
  head_->forward(lnf_out_, rows);
  if (!have_targets_) return 0.0;
  return head_->loss(stage(targets_, targets, BT), BT, n_valid);
}

void Gpt::backward(float loss_scale, const std::function<void(int)>& on_ready,
                   const SparseRowsHook& sparse_rows) {
  TESSERA_ASSERT(!ctx_.inference && have_targets_,
                 "running GPT backward after a forward with targets (once per forward)");
  TESSERA_ASSERT(!sparse_rows || (on_ready && tokens_.device() == core::Device::kCpu),
                 "running GPT backward with sparse embedding rows (they need on_ready and a "
                 "host backend)");
  const int wte_index = embedding_->wte_index();
  const Rows rows = last_rows_;
  const int nparams = params_.size();
  float* dln = scratch_.dln.f32();
  float* dres = dresidual_.f32();  // gradient of the residual stream, (n_local, C); accumulates
  {
    // The loss, LM head and final layernorm, as one timeline event.
    std::optional<parallel::Timeline::Scope> scope;
    if (timeline_) scope.emplace(timeline_, "bwd head", "backward");
    head_->backward(dln, lnf_out_, targets_.data<int32_t>(), loss_scale, rows);
    have_targets_ = false;  // the head's backward overwrote the logits: one backward per forward
    backend_.fill_zero(dres, rows.n_local() * C_ * sizeof(float));
    const core::ConstAct x_last = L_ > 0 ? blocks_.back()->out() : core::ConstAct(encoded_);
    ln_f_->backward(dres, dln, x_last, rows);
  }
  if (on_ready) {
    // The LM head is wte's last dense contributor: with sparse rows wte is final now.
    if (sparse_rows) on_ready(wte_index);
    on_ready(nparams - 1);
    on_ready(nparams - 2);
  }
  for (int l = L_ - 1; l >= 0; --l) {
    const core::ConstAct x_in = l > 0 ? blocks_[l - 1]->out() : core::ConstAct(encoded_);
    {
      std::optional<parallel::Timeline::Scope> scope;
      if (timeline_) scope.emplace(timeline_, backward_names_[l], "backward");
      blocks_[l]->backward(dres, x_in, rows);
    }
    if (on_ready) {
      const int first = blocks_[l]->first_index();
      for (int k = Block::kParams - 1; k >= 0; --k) on_ready(first + k);
    }
  }
  {
    std::optional<parallel::Timeline::Scope> scope;
    if (timeline_) scope.emplace(timeline_, "bwd embed", "backward");
    const int32_t* tokens = tokens_.data<int32_t>();
    const float* dout = embedding_->backward(dres, tokens, rows, /*scatter_wte=*/!sparse_rows);
    if (sparse_rows) {
      const int64_t N = rows.B * rows.T;
      sparse_row_ids_.resize(static_cast<size_t>(N));
      for (int64_t i = 0; i < N; ++i) {
        const int64_t row = static_cast<int64_t>(tokens[i]) - vocab_start_;
        sparse_row_ids_[i] = row >= 0 && row < Vp_local_ ? static_cast<int32_t>(row) : -1;
      }
      sparse_rows(wte_index, sparse_row_ids_.data(), dout, N);
    }
  }
  if (on_ready) {
    on_ready(wte_index + 1);  // wpe
    if (!sparse_rows) on_ready(wte_index);
  }
}

const float* Gpt::decode(KvCache& cache, const int32_t* tokens, const int32_t* slots,
                         const int32_t* positions, int64_t N, const int64_t* head_rows,
                         int64_t n_head_rows) {
  TESSERA_ASSERT(ctx_.act == core::DType::kF32,
                 "decoding on a GPT with fp32 activations (bf16 ones are for training)");
  TESSERA_ASSERT(N >= 1 && N <= max_decode_rows(),
                 "decoding between 1 and max_decode_rows() (B * T, or B * T / tp when built "
                 "sequence parallel) rows");
  // Each run of rows of one slot at consecutive positions gets its blocks (kv_append writes them).
  for (int64_t i = 0, j = 0; i < N; i = j) {
    for (j = i + 1; j < N && slots[j] == slots[i] && positions[j] == positions[j - 1] + 1;) ++j;
    cache.make_writable(slots[i], positions[i], positions[j - 1] + 1);
  }
  const int32_t* tok = stage(tokens_, tokens, N);
  const int32_t* slot = stage(slots_, slots, N);
  const int32_t* pos = stage(positions_, positions, N);
  have_targets_ = false;  // decode reuses the forward activations: no backward after it
  embedding_->decode(encoded_.f32(), tok, pos, N);
  const float* x = encoded_.f32();
  for (int l = 0; l < L_; ++l) {
    blocks_[l]->decode(x, cache, l, slot, pos, N);
    x = blocks_[l]->out().f32();
  }
  ln_f_->forward(lnf_out_.f32(), x, N);
  int64_t M = N;
  if (head_rows != nullptr) {
    // Move the selected rows to the front, in order (row m comes from head_rows[m] >= m).
    float* h = lnf_out_.f32();
    for (int64_t m = 0; m < n_head_rows; ++m) {
      TESSERA_ASSERT(
          head_rows[m] >= m && head_rows[m] < N && (m == 0 || head_rows[m] > head_rows[m - 1]),
          "decode's head_rows increasing, inside [0, N)");
      if (head_rows[m] != m) backend_.copy(h + m * C_, h + head_rows[m] * C_, C_ * sizeof(float));
    }
    M = n_head_rows;
  }
  if (M > 0) head_->forward(lnf_out_.f32(), Rows::flat(M));
  return head_->logits();
}

}  // namespace tessera::models
