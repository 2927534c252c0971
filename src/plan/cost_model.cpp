// The cost model's arithmetic. Every count below is per rank and per training step; the shapes
// are those of src/models (Megatron-style splits: qkv and fc column-parallel, proj and fc-proj
// row-parallel, the vocabulary split over tp, heads split over tp).
#include "plan/cost_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "models/gpt.h"

namespace tessera::plan {

double step_model_flops(const Workload& w) {
  return models::Gpt::flops_per_token(w.model, w.seq_len) * static_cast<double>(w.global_batch) *
         static_cast<double>(w.seq_len);
}

double mfu(const Workload& w, const Cluster& cluster, int devices, double seconds) {
  const double peak = cluster.peak_flops > 0 ? cluster.peak_flops : cluster.gemm_flops;
  return step_model_flops(w) / (seconds * devices * peak);
}

double all_reduce_s(double bytes, int p, const Link& link) {
  if (p <= 1) return 0;
  return 2.0 * (p - 1) * link.latency_s + 2.0 * (p - 1) / p * bytes / link.bandwidth_Bps;
}

double reduce_scatter_s(double bytes, int p, const Link& link) {
  if (p <= 1) return 0;
  return (p - 1) * link.latency_s + static_cast<double>(p - 1) / p * bytes / link.bandwidth_Bps;
}

double all_gather_s(double bytes, int p, const Link& link) {
  return reduce_scatter_s(bytes, p, link);
}

double local_params(const core::ModelConfig& m, int tp) {
  const double C = m.n_embd, L = m.n_layer, Vp = m.padded_vocab_size(), S = m.max_seq_len;
  // Per layer: qkv and fc (weights and biases split), proj and fc-proj (weights split, biases
  // replicated), two layernorms (replicated).
  const double split = 3 * C * C + 3 * C + C * C + 4 * C * C + 4 * C + 4 * C * C;
  const double replicated = C + C + 4 * C;
  return L * (split / tp + replicated) + Vp * C / tp + S * C + 2 * C;
}

std::vector<Gemm> step_gemms(const Workload& w, const Layout& layout) {
  const core::ModelConfig& m = w.model;
  const int64_t tp = layout.tp, T = w.seq_len, C = m.n_embd, NH = m.n_head, HS = C / NH;
  const int64_t Vp = m.padded_vocab_size();
  const int64_t micro_batches = w.global_batch / layout.dp / layout.micro;
  const int64_t M = layout.micro * T;
  const double per_step = static_cast<double>(micro_batches);
  std::vector<Gemm> out;
  // A linear (in -> out features): forward, dinp and dweight.
  auto linear = [&](int64_t in, int64_t outf, double times) {
    out.push_back({M, outf, in, times});  // forward: (M x in) (in x out)
    out.push_back({M, in, outf, times});  // dinp: (M x out) (out x in)
    out.push_back({outf, in, M, times});  // dweight: (out x M) (M x in)
  };
  const double layers = static_cast<double>(m.n_layer) * per_step;
  linear(C, 3 * C / tp, layers);
  linear(C / tp, C, layers);
  linear(C, 4 * C / tp, layers);
  linear(4 * C / tp, C, layers);
  // Attention per sequence and local head: scores (T x HS)(HS x T), values (T x T)(T x HS);
  // backward: the scores again (the probabilities are recomputed from the saved statistics),
  // d(att) like the scores, dV, dQ and dK like values.
  const double heads = layers * static_cast<double>(layout.micro * NH / tp);
  out.push_back({T, T, HS, 3 * heads});
  out.push_back({T, HS, T, 4 * heads});
  linear(C, Vp / tp, per_step);  // the tied LM head
  return out;
}

namespace {

const Link& link_for(const Cluster& c, int group, int span) {
  // A group of `group` ranks, each `span` apart in the rank order, stays in a node when its
  // members' spread fits one node's devices.
  return static_cast<int64_t>(group) * span <= c.devices_per_node ? c.intra : c.inter;
}

}  // namespace

Prediction predict(const Workload& w, const Cluster& cluster, const Layout& layout) {
  Prediction p;
  p.layout = layout;
  const core::ModelConfig& m = w.model;
  const int dp = layout.dp, tp = layout.tp;
  const int64_t Vp = m.padded_vocab_size();
  auto refuse = [&](const std::string& why) {
    p.fits = false;
    p.why_not = why;
    return p;
  };
  if (m.n_head % tp != 0) return refuse("heads % tp != 0");
  if (m.n_embd % tp != 0) return refuse("n_embd % tp != 0");
  if (Vp % tp != 0) return refuse("padded vocab % tp != 0");
  if (layout.micro < 1 || w.global_batch % (static_cast<int64_t>(dp) * layout.micro) != 0) {
    return refuse("global batch % (dp x micro) != 0");
  }
  if (layout.sequence_parallel && (tp == 1 || w.seq_len % tp != 0)) {
    return refuse("sequence parallel needs tp > 1 and seq_len % tp == 0");
  }
  if (layout.zero == 1 && dp == 1) return refuse("zero 1 needs dp > 1");

  const bool bf16 = cluster.precision == "bf16";
  const double e = bf16 ? 2.0 : 4.0;  // activation and weight element bytes
  const double P = local_params(m, tp);
  const double C = m.n_embd, L = m.n_layer, NH = m.n_head, T = static_cast<double>(w.seq_len);
  const double shard = layout.zero == 1 ? dp : 1.0;

  // ---- Memory per rank ----
  p.weights = P * e;
  p.grads = P * 4.0;                              // gradients accumulate in fp32
  p.optimizer = P * (bf16 ? 12.0 : 8.0) / shard;  // (fp32 master +) m + v
  // Activations of one micro-batch, per token: the layernorm/residual region (replicated over
  // tp, or split along the sequence), the split region (qkv, attention softmax statistics (2 a
  // head), attention output, fc and GELU outputs) and the LM head's logits (their gradient
  // overwrites them).
  const double sp = layout.sequence_parallel ? tp : 1.0;
  const double per_token = L * (4 * C / sp + (12 * C + 2 * NH) / tp) + 1.0 * Vp / tp;
  p.activations = per_token * static_cast<double>(layout.micro) * T * e;

  // ---- Time per step ----
  for (const Gemm& g : step_gemms(w, layout)) {
    p.gemm_s += g.count * 2.0 * g.m * g.n * g.k / cluster.gemm_rate(g.m, g.n, g.k);
  }
  const double micro_batches = static_cast<double>(w.global_batch / dp / layout.micro);
  const double tokens = micro_batches * static_cast<double>(layout.micro) * T;
  // Element-wise traffic per token, in elements read + written, forward and backward: the
  // layernorm/residual region (~30 C), softmax (5 NH T), GELU (20 C), cross-entropy (4 Vp).
  double elementwise = L * (30 * C / sp + (5 * NH * T + 20 * C) / tp) + 4.0 * Vp / tp + 4 * C;
  // Sequence parallelism's reduce-scatters (4 L + 2 per micro-batch, below) pack their send
  // rank-major first: a read and a write of C per token each.
  if (layout.sequence_parallel) elementwise += (4 * L + 2) * 2 * C;
  p.elementwise_s = tokens * elementwise * e / cluster.memory_Bps;

  if (tp > 1) {
    const Link& link = link_for(cluster, tp, 1);
    // The loss's three small reductions (row max, sum of exponentials, target logit).
    const double loss = 3 * all_reduce_s(static_cast<double>(layout.micro) * T * 4, tp, link);
    if (layout.sequence_parallel) {
      // Sequence parallelism (src/parallel/mappings.h): an all-gather or reduce-scatter along
      // the sequence where an all-reduce was: 4 per layer and the embedding's and head's
      // forward, as many backward, and qkv's and fc's inputs gathered again in backward (2 per
      // layer): 10 L + 4 per micro-batch (4 L + 2 of them reduce-scatters), each one blocked
      // call over its sequences (Communicator::all_gather_blocks) of the (micro, T, C) tensor.
      const double act = static_cast<double>(layout.micro) * T * C * e;
      p.tp_comm_s = micro_batches * ((10 * L + 4) * reduce_scatter_s(act, tp, link) + loss);
    } else {
      // 2 per layer forward and 2 backward, and the embedding's forward and backward.
      const double act = static_cast<double>(layout.micro) * T * C * e;
      p.tp_comm_s = micro_batches * ((4 * L + 2) * all_reduce_s(act, tp, link) + loss);
    }
  }

  const double grads = P * 4.0;
  if (dp > 1) {
    const Link& link = link_for(cluster, dp, tp);
    // The tied embedding's gradient is final only at the end of backward; the other buckets can
    // hide under the last micro-batch's backward (about 2/3 of its compute).
    const double wte = Vp * C / tp * 4.0;
    const double rest = std::max(0.0, grads - wte);
    const double buckets = std::ceil(rest / (w.bucket_mb * 1048576.0)) + 1;
    // (No window where the collectives compute on the same cores: cluster.comm_overlaps_compute.)
    const double window = cluster.comm_overlaps_compute
                              ? 2.0 / 3.0 * (p.gemm_s + p.elementwise_s) / micro_batches
                              : 0.0;
    // ZeRO-1 on the CPU backend with the dp group on one node takes the node-shared exchange
    // (parallel.node_shared auto): no messages, only memory traffic after backward: the owned
    // pieces read from every rank and written once (dp + 1 passes over P / dp), the others'
    // updated weights copied in (a read and a write of (dp - 1) / dp of them), and three
    // barriers.
    const bool node_shared =
        layout.zero == 1 && !bf16 && static_cast<int64_t>(dp) * tp <= cluster.devices_per_node;
    if (node_shared) {
      const double bytes = (dp + 1.0) * grads / dp + 2.0 * (dp - 1.0) / dp * P * e;
      p.dp_comm_s = bytes / cluster.memory_Bps + 3 * link.latency_s;
    } else if (layout.zero == 1) {
      const double rest_s = reduce_scatter_s(rest, dp, link) + buckets * (dp - 1) * link.latency_s;
      p.dp_comm_s = std::max(0.0, rest_s - window) + reduce_scatter_s(wte, dp, link) +
                    all_gather_s(P * e, dp, link) + buckets * (dp - 1) * link.latency_s;
    } else {
      const double rest_s = all_reduce_s(rest, dp, link) + buckets * 2 * (dp - 1) * link.latency_s;
      p.dp_comm_s = std::max(0.0, rest_s - window) + all_reduce_s(wte, dp, link);
    }
  }
  // Zeroing the gradients (a write), clipping (a read of the owned gradients), AdamW (reads
  // weight, gradient, m, v; writes weight, m, v) over the owned share.
  p.optimizer_s = (P * 4.0 + (4.0 + 28.0) * P / shard) / cluster.memory_Bps;

  if (p.memory() > 0.9 * cluster.device_memory_bytes) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "needs %.1f GB of %.1f GB per device", p.memory() / 1e9,
                  cluster.device_memory_bytes / 1e9);
    return refuse(buf);
  }
  return p;
}

}  // namespace tessera::plan
