// Module gradients: every module of src/models/ (LayerNorm, ColumnParallelLinear,
// RowParallelLinear, CausalSelfAttention, Mlp, Block, VocabParallelEmbedding, LmHead with its
// loss) has its backward checked against central differences of a scalar objective, at tp = 1
// on the CPU backend: L = <forward(x), R> for a fixed random R (so dL/dout = R), or for LmHead
// its summed cross-entropy with loss_scale 1. Checked: the input gradient (where the module has
// one) and every parameter gradient of the module, a fixed-seed sample of entries per tensor.
// The documented OVERWRITE / ACCUMULATE rules are checked on the way: every gradient buffer is
// pre-filled with random values before backward; an ACCUMULATE gradient is judged as
// (after - before), an OVERWRITE one as it is.
//
// Precision. The modules are float32; L is summed in double from their float outputs. Every
// input and weight is a multiple of 2^-16 below 2^8 in magnitude, so with eps = 2^-6 the points
// p ± eps, p ± 2 eps are exact floats, and the numeric gradient is the fourth-order central
// difference (8 (L(p+eps) - L(p-eps)) - (L(p+2eps) - L(p-2eps))) / (12 eps). Its truncation
// error is eps^4 |f^(5)| / 30 ~ 2e-9 |f^(5)|: negligible for these smooth maps (none for the
// linear ones). What remains is float round-off in the outputs one entry moves: a few ulps of
// O(1..10) values over up to B*T*C outputs gives |ΔL| noise ~ 1e-6..1e-5, amplified by
// ~1 / eps = 64 to ~1e-4..1e-3 absolute. The gradients are O(0.1..10). Tolerance, per entry:
//     |numeric - analytic| <= kAtol * scale + kRtol * |numeric|,   kAtol = 1e-3, kRtol = 1e-2,
// where scale = max(1, max |numeric| over the tensor's sampled entries) is measured from the
// differences alone (a wrong analytic gradient cannot loosen its own bound). Gradients that are
// exactly zero in theory (attention's key bias, unused embedding rows, vocabulary padding) are
// sampled too and must come out below kAtol * scale. Observed worst error: 0.12 of the bound
// (Block's qkv weight); a sign flip, a 5% error in one entry, a missing term or a wrong
// OVERWRITE / ACCUMULATE reading is far above it (ModuleGradient.CheckerRejectsWrongGradients
// keeps that demonstrated).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "core/error.h"
#include "grad_check.h"
#include "models/attention.h"
#include "models/block.h"
#include "models/embedding.h"
#include "models/gpt.h"
#include "models/layernorm.h"
#include "models/linear.h"
#include "models/lm_head.h"
#include "models/mlp.h"
#include "models/module.h"
#include "parallel/communicator.h"
#include "params/param_spec.h"
#include "test_models.h"

namespace tessera::models {
namespace {

namespace tt = tessera::testing;

constexpr int64_t kB = 2, kT = 8, kC = 32, kNH = 4, kBT = kB * kT;
constexpr int64_t kModVocab = 60;        // real tokens,
constexpr int64_t kModVocabPadded = 64;  // padded to 64: 4 padding rows
constexpr int kSamples = 20;             // entries checked per tensor
constexpr double kEps = 0x1p-6;          // 0.015625
constexpr double kAtol = 1e-3;
constexpr double kRtol = 1e-2;

// ParamSpec rows of Gpt::param_specs for a one-layer model.
constexpr int kWte = 0;
constexpr int kLayer = 2;  // h.0: ln_1 (w, b), qkv (w, b), attn proj (w, b), ln_2, fc, mlp proj
constexpr int kLn1 = kLayer + 0, kQkv = kLayer + 2, kAttnProj = kLayer + 4, kLn2 = kLayer + 6,
              kFc = kLayer + 8, kMlpProj = kLayer + 10, kLnF = kLayer + Block::kParams;

core::ModelConfig small_model() {
  core::ModelConfig m;
  m.vocab_size = kModVocab;
  m.pad_vocab_to = 32;
  m.max_seq_len = 16;
  m.n_layer = 1;
  m.n_head = kNH;
  m.n_embd = kC;
  return m;
}

// offset + scale * N(0, 1), rounded to a multiple of 2^-16: p ± kEps and p ± 2 kEps are then
// exact floats (|p| < 2^8 here), so the difference stencil is exactly symmetric.
std::vector<float> random_floats(int64_t n, uint64_t seed, double scale = 1.0,
                                 double offset = 0.0) {
  std::vector<float> v(static_cast<size_t>(n));
  const auto d = tt::random_vector(n, seed, scale, offset);
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = static_cast<float>(std::ldexp(std::round(std::ldexp(d[i], 16)), -16));
  }
  return v;
}

// Σ out[i] * r[i] in double over float values.
double dot(const float* out, const std::vector<float>& r) {
  double s = 0.0;
  for (size_t i = 0; i < r.size(); ++i) s += static_cast<double>(out[i]) * r[i];
  return s;
}

std::vector<int64_t> iota(int64_t begin, int64_t end) {
  std::vector<int64_t> v;
  for (int64_t i = begin; i < end; ++i) v.push_back(i);
  return v;
}

// Up to k distinct entries of `candidates`, chosen by a fixed seed (mt19937's raw output is
// specified by the standard, so the sample is the same everywhere).
std::vector<int64_t> sample(std::vector<int64_t> candidates, int k, uint32_t seed) {
  std::mt19937 rng(seed);
  const size_t n = std::min(candidates.size(), static_cast<size_t>(k));
  for (size_t i = 0; i < n; ++i) {
    const size_t j = i + rng() % (candidates.size() - i);
    std::swap(candidates[i], candidates[j]);
  }
  candidates.resize(n);
  return candidates;
}

struct Sampled {
  int64_t index;
  double analytic, numeric;
};

struct CheckResult {
  std::vector<Sampled> entries;
  double scale = 1.0;  // max(1, max |numeric|)
  int failures = 0;
  double worst_ratio = 0.0;  // max over entries of |numeric - analytic| / bound
  int64_t worst = -1;        // position in entries

  double bound(const Sampled& e) const { return kAtol * scale + kRtol * std::fabs(e.numeric); }
};

// Central differences of `objective` with respect to p[i] for every i in `indices`, against
// analytic[i]. `objective` must run the module's forward on the current contents of p.
CheckResult finite_differences(float* p, const std::vector<double>& analytic,
                               const std::vector<int64_t>& indices,
                               const std::function<double()>& objective) {
  CheckResult r;
  for (int64_t i : indices) {
    const float saved = p[i];
    auto at = [&](double k) {
      p[i] = static_cast<float>(saved + k * kEps);
      EXPECT_EQ(static_cast<double>(p[i]), static_cast<double>(saved) + k * kEps)
          << "inexact step at entry " << i << " = " << saved;
      return objective();
    };
    const double d1 = at(1) - at(-1), d2 = at(2) - at(-2);
    p[i] = saved;
    r.entries.push_back({i, analytic[i], (8.0 * d1 - d2) / (12.0 * kEps)});
  }
  for (const Sampled& e : r.entries) r.scale = std::max(r.scale, std::fabs(e.numeric));
  for (size_t k = 0; k < r.entries.size(); ++k) {
    const Sampled& e = r.entries[k];
    const double ratio = std::fabs(e.numeric - e.analytic) / r.bound(e);
    if (ratio > 1.0) ++r.failures;
    if (r.worst < 0 || ratio > r.worst_ratio) {
      r.worst_ratio = ratio;
      r.worst = static_cast<int64_t>(k);
    }
  }
  return r;
}

std::string describe(const std::string& what, const CheckResult& r) {
  std::ostringstream s;
  s << what << ": " << r.failures << " of " << r.entries.size()
    << " sampled entries outside |numeric - analytic| <= " << kAtol << " * " << r.scale << " + "
    << kRtol << " * |numeric|";
  if (r.worst >= 0) {
    const Sampled& e = r.entries[r.worst];
    s << "; worst: entry " << e.index << ", analytic " << e.analytic << ", numeric " << e.numeric
      << " (" << r.worst_ratio << " x its bound)";
  }
  return s.str();
}

void expect_gradient(const std::string& what, float* p, const std::vector<double>& analytic,
                     const std::vector<int64_t>& indices,
                     const std::function<double()>& objective) {
  ASSERT_FALSE(indices.empty()) << what;
  const CheckResult r = finite_differences(p, analytic, indices, objective);
  EXPECT_EQ(r.failures, 0) << describe(what, r);
}

// (after - before) in double: what an ACCUMULATE backward added.
std::vector<double> added(const std::vector<float>& after, const std::vector<float>& before) {
  std::vector<double> d(after.size());
  for (size_t i = 0; i < after.size(); ++i) {
    d[i] = static_cast<double>(after[i]) - static_cast<double>(before[i]);
  }
  return d;
}

// One rank's parameters (random, not the model's init, so no weight is 0 or 1 and every bias
// matters), a gradient arena pre-filled with random values (so ACCUMULATE is visible), a tp
// group of one and the activation plan the module under test adds to.
class Harness {
 public:
  Harness()
      : backend_(backends::cpu_backend()),
        tp_(MPI_COMM_SELF, "tp"),
        params_(Gpt::param_specs(small_model()), 0, 1),
        weights_(params_.make_twin()),
        grads_(params_.make_twin()),
        ctx_{backend_, tp_, params_, weights_, grads_, 0, 1} {
    // The rows the tests name are the rows Gpt::param_specs has.
    const std::vector<std::pair<int, const char*>> rows = {{kWte, "wte"},
                                                           {kWte + 1, "wpe"},
                                                           {kLn1, "h.0.ln_1.weight"},
                                                           {kQkv, "h.0.attn.qkv.weight"},
                                                           {kAttnProj, "h.0.attn.proj.weight"},
                                                           {kLn2, "h.0.ln_2.weight"},
                                                           {kFc, "h.0.mlp.fc.weight"},
                                                           {kMlpProj, "h.0.mlp.proj.weight"},
                                                           {kLnF, "ln_f.weight"}};
    for (const auto& [i, name] : rows) EXPECT_EQ(params_.specs().at(i).name, name);
    EXPECT_EQ(params_.size(), kLnF + 2);
    params_.initialise(weights_, 7);
    for (int i = 0; i < params_.size(); ++i) {
      // LayerNorm gains near 1, biases small, matrices large enough that attention is far from
      // uniform and GELU is used on both sides of 0.
      double scale = 0.3, offset = 0.0;
      if (params_.specs()[i].init == params::Init::kOnes) scale = 0.2, offset = 1.0;
      if (params_.specs()[i].init == params::Init::kZeros) scale = 0.1;
      const auto v = random_floats(params_.local_numel(i), 100 + i, scale, offset);
      std::copy(v.begin(), v.end(), ctx_.weight(i));
    }
    const auto g = random_floats(params_.total_local_numel(), 99, 0.5);
    std::copy(g.begin(), g.end(), grads_.f32());
    grads_before_ = g;
  }

  ModelContext& ctx() { return ctx_; }
  ArenaPlan& plan() { return plan_; }
  backends::Backend& backend() { return backend_; }
  void allocate() { arena_ = plan_.allocate(backend_); }
  int64_t numel(int i) const { return params_.local_numel(i); }

  // What backward added to parameter i's gradient.
  std::vector<double> grad_added(int i) const {
    const int64_t off = params_.offset(i), n = params_.local_numel(i);
    const float* g = grads_.f32() + off;
    std::vector<double> d(n);
    for (int64_t k = 0; k < n; ++k) {
      d[k] = static_cast<double>(g[k]) - static_cast<double>(grads_before_[off + k]);
    }
    return d;
  }

  // Checks parameter i's gradient at `samples` entries of `candidates` (default: all its
  // entries); `part` names the candidates in a failure message.
  void expect_param_gradient(int i, const std::function<double()>& objective,
                             std::vector<int64_t> candidates = {}, int samples = kSamples,
                             const std::string& part = "") {
    if (candidates.empty()) candidates = iota(0, numel(i));
    expect_gradient(params_.specs()[i].name + part, ctx_.weight(i), grad_added(i),
                    sample(std::move(candidates), samples, 1000 + i), objective);
  }

  // Scratch of the layer modules, added to the plan.
  void plan_scratch(BlockScratch& s) {
    const int64_t ws = backend_.attention_workspace_size(kB, kT, kC, kNH);
    plan_.add(&s.dln, {kBT, kC});
    plan_.add(&s.attention.dqkv, {kBT, 3 * kC});
    plan_.add(&s.attention.datty, {kBT, kC});
    plan_.add(&s.attention.workspace, {ws});
    plan_.add(&s.mlp.dfch, {kBT, 4 * kC});
    plan_.add(&s.mlp.dfch_gelu, {kBT, 4 * kC});
  }

 private:
  backends::Backend& backend_;
  parallel::MpiCommunicator tp_;
  params::ParamSet params_;
  core::Tensor weights_, grads_;
  ModelContext ctx_;
  ArenaPlan plan_;
  core::Tensor arena_;
  std::vector<float> grads_before_;
};

// The input-gradient sample: kSamples entries of an (N, C)-sized input.
std::vector<int64_t> input_sample(int64_t n, uint32_t seed = 7) {
  return sample(iota(0, n), kSamples, seed);
}

TEST(ModuleGradient, LayerNorm) {
  Harness h;
  LayerNorm ln(h.ctx(), h.plan(), kLnF, kBT, kC);
  h.allocate();
  auto x = random_floats(kBT * kC, 1, 1.5, 0.3);
  const auto r = random_floats(kBT * kC, 2);
  std::vector<float> out(kBT * kC);
  auto objective = [&] {
    ln.forward(out.data(), x.data(), kBT);
    return dot(out.data(), r);
  };
  objective();
  // dinp ACCUMULATES.
  const auto dinp_before = random_floats(kBT * kC, 3);
  auto dinp = dinp_before;
  ln.backward(dinp.data(), r.data(), x.data(), Rows::flat(kBT));
  expect_gradient("LayerNorm dinp", x.data(), added(dinp, dinp_before), input_sample(x.size()),
                  objective);
  for (int i : {kLnF, kLnF + 1}) h.expect_param_gradient(i, objective);
}

TEST(ModuleGradient, ColumnParallelLinear) {
  Harness h;
  const int64_t OC = 3 * kC;
  ColumnParallelLinear fc(h.ctx(), kQkv, kC, OC);
  auto x = random_floats(kBT * kC, 11);
  const auto r = random_floats(kBT * OC, 12);
  std::vector<float> out(kBT * OC);
  auto objective = [&] {
    fc.forward(out.data(), x.data(), Rows::flat(kBT));
    return dot(out.data(), r);
  };
  objective();
  // dinp OVERWRITTEN: the random fill must not survive.
  auto dinp = random_floats(kBT * kC, 13);
  fc.backward(dinp.data(), r.data(), x.data(), Rows::flat(kBT));
  expect_gradient("ColumnParallelLinear dinp", x.data(), tt::cast_vector<double>(dinp),
                  input_sample(x.size()), objective);
  for (int i : {kQkv, kQkv + 1}) h.expect_param_gradient(i, objective);
}

TEST(ModuleGradient, RowParallelLinear) {
  Harness h;
  const int64_t C_in = 4 * kC;
  RowParallelLinear proj(h.ctx(), kMlpProj, C_in, kC);
  auto x = random_floats(kBT * C_in, 21);
  const auto r = random_floats(kBT * kC, 22);
  std::vector<float> out(kBT * kC);
  auto objective = [&] {
    proj.forward(out.data(), x.data(), Rows::flat(kBT));
    return dot(out.data(), r);
  };
  objective();
  auto dinp = random_floats(kBT * C_in, 23);  // OVERWRITTEN
  proj.backward(dinp.data(), r.data(), x.data(), Rows::flat(kBT));
  expect_gradient("RowParallelLinear dinp", x.data(), tt::cast_vector<double>(dinp),
                  input_sample(x.size()), objective);
  for (int i : {kMlpProj, kMlpProj + 1}) h.expect_param_gradient(i, objective);
}

TEST(ModuleGradient, CausalSelfAttention) {
  Harness h;
  BlockScratch scratch;
  h.plan_scratch(scratch);
  CausalSelfAttention attn(h.ctx(), h.plan(), scratch.attention, kQkv, kB, kT, kC, kNH);
  h.allocate();
  auto x = random_floats(kBT * kC, 31);
  const auto r = random_floats(kBT * kC, 32);
  std::vector<float> out(kBT * kC);
  auto objective = [&] {
    attn.forward(out.data(), x.data(), Rows{kB, kT});
    return dot(out.data(), r);
  };
  objective();
  auto dinp = random_floats(kBT * kC, 33);  // OVERWRITTEN
  attn.backward(dinp.data(), r.data(), x.data(), Rows{kB, kT});
  expect_gradient("CausalSelfAttention dinp", x.data(), tt::cast_vector<double>(dinp),
                  input_sample(x.size()), objective);
  // The qkv bias sample includes key-bias entries, whose true gradient is 0 (softmax is
  // invariant to a shift shared by a row's scores).
  for (int i : {kQkv, kQkv + 1, kAttnProj, kAttnProj + 1}) h.expect_param_gradient(i, objective);
}

TEST(ModuleGradient, Mlp) {
  Harness h;
  BlockScratch scratch;
  h.plan_scratch(scratch);
  Mlp mlp(h.ctx(), h.plan(), scratch.mlp, kFc, kBT, kC);
  h.allocate();
  auto x = random_floats(kBT * kC, 41);
  const auto r = random_floats(kBT * kC, 42);
  std::vector<float> out(kBT * kC);
  auto objective = [&] {
    mlp.forward(out.data(), x.data(), Rows::flat(kBT));
    return dot(out.data(), r);
  };
  objective();
  auto dinp = random_floats(kBT * kC, 43);  // OVERWRITTEN
  mlp.backward(dinp.data(), r.data(), x.data(), Rows::flat(kBT));
  expect_gradient("Mlp dinp", x.data(), tt::cast_vector<double>(dinp), input_sample(x.size()),
                  objective);
  for (int i : {kFc, kFc + 1, kMlpProj, kMlpProj + 1}) h.expect_param_gradient(i, objective);
}

TEST(ModuleGradient, Block) {
  Harness h;
  BlockScratch scratch;
  h.plan_scratch(scratch);
  Block block(h.ctx(), h.plan(), scratch, kLn1, kB, kT, kC, kNH);
  h.allocate();
  auto x = random_floats(kBT * kC, 51);
  const auto r = random_floats(kBT * kC, 52);
  auto objective = [&] {
    block.forward(x.data(), Rows{kB, kT});
    return dot(block.out().f32(), r);
  };
  objective();
  // dres: the gradient at out() on entry, the gradient at x on return (the residual identity
  // carries R through; both branches add to it).
  auto dres = r;
  block.backward(dres.data(), x.data(), Rows{kB, kT});
  expect_gradient("Block dres (gradient at x)", x.data(), tt::cast_vector<double>(dres),
                  input_sample(x.size()), objective);
  for (int i = kLn1; i < kLn1 + Block::kParams; ++i) h.expect_param_gradient(i, objective);
}

TEST(ModuleGradient, VocabParallelEmbedding) {
  Harness h;
  VocabParallelEmbedding emb(h.ctx(), kWte, kC, 0, kModVocabPadded);
  // Repeated tokens (their rows accumulate) and both ends of the real vocabulary.
  const std::vector<int32_t> tokens = {5, 17, 5, 59, 0, 33, 17, 42, 8, 5, 21, 0, 59, 12, 33, 17};
  ASSERT_EQ(static_cast<int64_t>(tokens.size()), kBT);
  const auto r = random_floats(kBT * kC, 62);
  std::vector<float> out(kBT * kC);
  auto objective = [&] {
    emb.forward(out.data(), tokens.data(), Rows{kB, kT});
    return dot(out.data(), r);
  };
  objective();
  emb.backward(r.data(), tokens.data(), Rows{kB, kT});
  // wte: the rows of used tokens, then (expected 0) unused rows, padding rows among them.
  std::vector<int64_t> used, unused;
  for (int64_t v = 0; v < kModVocabPadded; ++v) {
    const bool in = std::find(tokens.begin(), tokens.end(), v) != tokens.end();
    for (int64_t c = 0; c < kC; ++c) (in ? used : unused).push_back(v * kC + c);
  }
  h.expect_param_gradient(kWte, objective, used, kSamples, " (used rows)");
  h.expect_param_gradient(kWte, objective, unused, 5, " (unused rows)");
  // wpe: positions < T, then (expected 0) positions the batch does not reach.
  h.expect_param_gradient(kWte + 1, objective, iota(0, kT * kC), kSamples, " (t < T)");
  h.expect_param_gradient(kWte + 1, objective, iota(kT * kC, h.numel(kWte + 1)), 5, " (t >= T)");
}

TEST(ModuleGradient, LmHead) {
  Harness h;
  LmHead head(h.ctx(), h.plan(), h.ctx().weight(kWte), h.ctx().grad(kWte), kBT, kC, kModVocab, 0,
              kModVocabPadded);
  h.allocate();
  auto x = random_floats(kBT * kC, 71);
  // One ignored target (-1) and both ends of the real vocabulary.
  const std::vector<int32_t> targets = {3, 59, 0, 17, -1, 44, 8, 8, 25, 31, 2, 59, 50, 13, 7, 36};
  ASSERT_EQ(static_cast<int64_t>(targets.size()), kBT);
  int64_t n_valid = 0;
  auto objective = [&] {
    head.forward(x.data(), Rows::flat(kBT));
    return head.loss(targets.data(), kBT, &n_valid);
  };
  const double loss = objective();
  EXPECT_EQ(n_valid, kBT - 1);
  EXPECT_TRUE(std::isfinite(loss) && loss > 0.0) << loss;
  auto dx = random_floats(kBT * kC, 73);  // OVERWRITTEN
  head.backward(dx.data(), x.data(), targets.data(), 1.0f, Rows::flat(kBT));
  expect_gradient("LmHead dx", x.data(), tt::cast_vector<double>(dx), input_sample(x.size()),
                  objective);
  // The tied wte: real rows, then (expected 0) padding rows, which the loss never sees.
  h.expect_param_gradient(kWte, objective, iota(0, kModVocab * kC), kSamples, " (real rows)");
  h.expect_param_gradient(kWte, objective, iota(kModVocab * kC, kModVocabPadded * kC), 5,
                          " (padding rows)");
}

// The checker itself: a correct gradient passes; a sign flip, a 5% error in one entry and an
// ACCUMULATE gradient read as if it overwrote all fail. Without this a too-loose bound would
// let every module test pass silently.
TEST(ModuleGradient, CheckerRejectsWrongGradients) {
  Harness h;
  LayerNorm ln(h.ctx(), h.plan(), kLnF, kBT, kC);
  h.allocate();
  auto x = random_floats(kBT * kC, 81, 1.5, 0.3);
  const auto r = random_floats(kBT * kC, 82);
  std::vector<float> out(kBT * kC);
  auto objective = [&] {
    ln.forward(out.data(), x.data(), kBT);
    return dot(out.data(), r);
  };
  objective();
  const auto dinp_before = random_floats(kBT * kC, 83);
  auto dinp = dinp_before;
  ln.backward(dinp.data(), r.data(), x.data(), Rows::flat(kBT));
  const auto indices = input_sample(x.size());
  const auto right = added(dinp, dinp_before);
  EXPECT_EQ(finite_differences(x.data(), right, indices, objective).failures, 0);

  auto flipped = right;
  for (double& g : flipped) g = -g;
  EXPECT_GT(finite_differences(x.data(), flipped, indices, objective).failures, kSamples / 2);

  // The largest sampled entry 5% off: its bound is about 1.1% of |g|.
  int64_t largest = indices[0];
  for (int64_t i : indices) largest = std::fabs(right[i]) > std::fabs(right[largest]) ? i : largest;
  auto one_off = right;
  one_off[largest] *= 1.05;
  EXPECT_EQ(finite_differences(x.data(), one_off, indices, objective).failures, 1);

  const auto as_overwritten = tt::cast_vector<double>(dinp);
  EXPECT_GT(finite_differences(x.data(), as_overwritten, indices, objective).failures,
            kSamples / 2);
}

// The head's cross-entropy backward writes the logits gradient over the logits (no second
// (rows, Vp) tensor): after backward the logits are gone, a second backward without a forward is
// refused, and a new forward + backward adds the same gradient again (to float rounding: the
// second pass adds onto the first's sums).
TEST(GptHead, BackwardOverwritesTheLogitsOncePerForward) {
  const core::ModelConfig m = tt::small_generation_model();
  constexpr int64_t B = 2, T = 8;
  Gpt gpt(m, B, T);
  gpt.init_weights(3);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int64_t i = 0; i < B * T; ++i) {
    tokens[i] = static_cast<int32_t>((7 * i + 3) % m.vocab_size);
    targets[i] = static_cast<int32_t>((5 * i + 1) % m.vocab_size);
  }
  const int64_t Vp = gpt.padded_vocab_local();
  gpt.zero_grad();
  gpt.forward(tokens.data(), targets.data(), B, T);
  const std::vector<float> logits(gpt.logits(), gpt.logits() + B * T * Vp);
  gpt.backward(1.0f / (B * T));
  const std::vector<float> after(gpt.logits(), gpt.logits() + B * T * Vp);
  EXPECT_NE(after, logits) << "the logits should now hold their gradient";
  const std::vector<float> once(gpt.grads().f32(), gpt.grads().f32() + gpt.grads().numel());
  EXPECT_THROW(gpt.backward(1.0f / (B * T)), Error);
  gpt.forward(tokens.data(), targets.data(), B, T);
  EXPECT_EQ(std::vector<float>(gpt.logits(), gpt.logits() + B * T * Vp), logits);
  gpt.backward(1.0f / (B * T));
  const float* twice = gpt.grads().f32();
  for (size_t i = 0; i < once.size(); ++i) {
    ASSERT_NEAR(twice[i], 2 * once[i], 1e-6 * std::fabs(2 * once[i]) + 1e-12)
        << "gradient element " << i;
  }
}

}  // namespace
}  // namespace tessera::models
