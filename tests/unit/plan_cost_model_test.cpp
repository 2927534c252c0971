// tessera-plan's cost model on a case worked out by hand (a one-layer model small enough to
// count every GEMM and byte), the enumeration of layouts, the divisibility and memory rules,
// and the cluster file's errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "plan/cluster.h"
#include "plan/cost_model.h"
#include "plan/enumerate.h"
#include "scratch_dir.h"

namespace tessera::plan {
namespace {

// L = 1, C = 8, NH = 2 (HS 4), Vp = 16, max_seq_len 4; T = 4, global batch 2.
Workload tiny_workload() {
  Workload w;
  w.model.vocab_size = 16;
  w.model.pad_vocab_to = 16;
  w.model.max_seq_len = 4;
  w.model.n_layer = 1;
  w.model.n_head = 2;
  w.model.n_embd = 8;
  w.global_batch = 2;
  w.seq_len = 4;
  return w;
}

// 1 GFLOP/s for every GEMM, 1 GB/s streaming, links of 1 us + 1 GB/s, 1 GB per device.
Cluster unit_cluster(int devices) {
  Cluster c;
  c.devices_per_node = devices;
  c.device_memory_bytes = 1e9;
  c.gemm_flops = 1e9;
  c.memory_Bps = 1e9;
  c.intra = {1e-6, 1e9};
  c.inter = c.intra;
  return c;
}

TEST(PlanCostModel, RingCollectives) {
  const Link link{1e-6, 1e9};
  // 2 (p - 1) alpha + 2 (p - 1) / p * n / beta; reduce-scatter and all-gather half of it.
  EXPECT_DOUBLE_EQ(all_reduce_s(4e6, 4, link), 6e-6 + 6e-3);
  EXPECT_DOUBLE_EQ(reduce_scatter_s(4e6, 4, link), 3e-6 + 3e-3);
  EXPECT_DOUBLE_EQ(all_gather_s(4e6, 4, link), 3e-6 + 3e-3);
  EXPECT_EQ(all_reduce_s(4e6, 1, link), 0.0);
}

TEST(PlanCostModel, OneRankByHand) {
  const Workload w = tiny_workload();
  // Parameters: per layer qkv 3*64 + 24, proj 64 + 8, fc 4*64 + 32, fc-proj 4*64 + 8, two
  // layernorms 32: 872; wte 16*8 = 128, wpe 4*8 = 32, ln_f 16: 1048.
  EXPECT_DOUBLE_EQ(local_params(w.model, 1), 1048);
  const Prediction p = predict(w, unit_cluster(1), Layout{1, 1, 2, 0, false});
  ASSERT_TRUE(p.fits) << p.why_not;
  EXPECT_DOUBLE_EQ(p.weights, 4192);
  EXPECT_DOUBLE_EQ(p.grads, 4192);
  EXPECT_DOUBLE_EQ(p.optimizer, 8384);
  // Per token: 4C + 12C + 2 NH = 32 + 96 + 4, plus Vp = 16: 148 floats, for 2 x 4 tokens.
  EXPECT_DOUBLE_EQ(p.activations, 148.0 * 8 * 4);
  // GEMM FLOPs (M = 8 rows): qkv 3 x 2*8*24*8 = 9216, proj 3 x 1024, fc and fc-proj 3 x 4096
  // each, attention 4 (sequence, head) pairs x (3 + 4) products of 2*4*4*4 = 3584, LM head
  // 3 x 2*8*16*8 = 6144: 46592 at 1 GFLOP/s.
  EXPECT_NEAR(p.gemm_s, 46592e-9, 1e-18);
  // Element-wise: per token 30C + 5 NH T + 20C + 4 Vp + 4C = 536 floats, 8 tokens, 4 bytes.
  EXPECT_NEAR(p.elementwise_s, 536.0 * 8 * 4 * 1e-9, 1e-18);
  EXPECT_EQ(p.tp_comm_s, 0.0);
  EXPECT_EQ(p.dp_comm_s, 0.0);
  // Zeroing (4 bytes a parameter) + clip and AdamW (32): 36 x 1048 bytes at 1 GB/s.
  EXPECT_NEAR(p.optimizer_s, 36.0 * 1048 * 1e-9, 1e-18);
  EXPECT_NEAR(p.step_s(), 101.472e-6, 1e-15);  // 46.592 + 17.152 + 37.728 us
}

TEST(PlanCostModel, DataParallelByHand) {
  const Workload w = tiny_workload();
  const Prediction p = predict(w, unit_cluster(2), Layout{2, 1, 1, 0, false});
  ASSERT_TRUE(p.fits) << p.why_not;
  // Half the rows of the one-rank case.
  EXPECT_NEAR(p.gemm_s, 23296e-9, 1e-18);
  // Gradients 4192 bytes; wte's 512 go last. The other 3680 in 2 buckets (one of them wte's)
  // cost 2 us + 3.68 us + 2 buckets x 2 us = 9.68 us, under the 2/3 x 31.872 us window of
  // backward; wte's all-reduce shows: 2 us + 0.512 us.
  EXPECT_NEAR(p.dp_comm_s, 2.512e-6, 1e-15);
  // ZeRO-1 over MPI (the two ranks on two nodes): the moments halve, the dp step becomes the
  // exposed wte reduce-scatter (1 us + 0.256 us) plus a gather of the weights (1 us + 2.096 us)
  // plus a latency per bucket (2 us).
  Cluster two_nodes = unit_cluster(1);
  two_nodes.nodes = 2;
  const Prediction z = predict(w, two_nodes, Layout{2, 1, 1, 1, false});
  ASSERT_TRUE(z.fits) << z.why_not;
  EXPECT_DOUBLE_EQ(z.optimizer, 8384.0 / 2);
  EXPECT_NEAR(z.dp_comm_s, 1.256e-6 + 3.096e-6 + 2e-6, 1e-15);
  // ZeRO-1 on one node (node-shared, fp32): memory traffic only. The owned half of 4192 bytes of
  // gradients read from both ranks and written (3 x 2096), the other half of the weights read
  // and written (2 x 2096): 10480 bytes at 1 GB/s, plus three barriers (3 us).
  const Prediction s = predict(w, unit_cluster(2), Layout{2, 1, 1, 1, false});
  ASSERT_TRUE(s.fits) << s.why_not;
  EXPECT_NEAR(s.dp_comm_s, 10.48e-6 + 3e-6, 1e-15);
  // In bf16 (a GPU cluster) it is the MPI/NCCL exchange even on one node: the same time as
  // across two nodes (the unit cluster's links are alike).
  Cluster gpus = unit_cluster(2);
  gpus.precision = "bf16";
  Cluster gpu_nodes = two_nodes;
  gpu_nodes.precision = "bf16";
  EXPECT_DOUBLE_EQ(predict(w, gpus, Layout{2, 1, 1, 1, false}).dp_comm_s,
                   predict(w, gpu_nodes, Layout{2, 1, 1, 1, false}).dp_comm_s);
  // Where the collectives compute on the compute cores (the measured CPU cluster), nothing hides
  // under backward: the 9.68 us of the other buckets add to wte's 2.512 us.
  Cluster cpus = unit_cluster(2);
  cpus.comm_overlaps_compute = false;
  EXPECT_NEAR(predict(w, cpus, Layout{2, 1, 1, 0, false}).dp_comm_s, 9.68e-6 + 2.512e-6, 1e-15);
  // ZeRO-1 over MPI likewise: the reduce-scatter of the other buckets (1 us + 1.84 us + a
  // latency per bucket, 2 us) shows too.
  two_nodes.comm_overlaps_compute = false;
  EXPECT_NEAR(predict(w, two_nodes, Layout{2, 1, 1, 1, false}).dp_comm_s,
              4.84e-6 + 1.256e-6 + 3.096e-6 + 2e-6, 1e-15);
}

TEST(PlanCostModel, TensorAndSequenceParallelByHand) {
  const Workload w = tiny_workload();
  const Prediction p = predict(w, unit_cluster(2), Layout{1, 2, 2, 0, false});
  ASSERT_TRUE(p.fits) << p.why_not;
  // 4L + 2 = 6 all-reduces of 8 x 8 floats (2 us + 0.256 us each) and 3 of 8 floats (2 us +
  // 0.032 us).
  EXPECT_NEAR(p.tp_comm_s, 6 * 2.256e-6 + 3 * 2.032e-6, 1e-15);
  const Prediction s = predict(w, unit_cluster(2), Layout{1, 2, 2, 0, true});
  ASSERT_TRUE(s.fits) << s.why_not;
  // Sequence parallelism: 10 L + 4 = 14 all-gathers or reduce-scatters, each one blocked call
  // over the micro-batch's 2 sequences of 2 x 4 x 8 floats (1 us + 0.128 us), plus the loss's 3;
  // the layernorm/residual region halved in memory (4C -> 2C per token: 16 floats x 8 tokens)
  // and in element-wise traffic (30C -> 15C: 120 floats a token), less the 4 L + 2 = 6
  // reduce-scatters' packing of their send (a read and a write of C a token each: 96 floats).
  EXPECT_NEAR(s.tp_comm_s, 14 * 1.128e-6 + 3 * 2.032e-6, 1e-15);
  EXPECT_DOUBLE_EQ(p.activations - s.activations, 16.0 * 8 * 4);
  EXPECT_NEAR(p.elementwise_s - s.elementwise_s, (120.0 - 96.0) * 8 * 4 * 1e-9, 1e-18);
}

TEST(PlanCostModel, RulesOutWhatCannotRun) {
  Workload w = tiny_workload();
  EXPECT_EQ(predict(w, unit_cluster(4), Layout{1, 4, 2, 0, false}).why_not, "heads % tp != 0");
  EXPECT_EQ(predict(w, unit_cluster(4), Layout{4, 1, 1, 0, false}).why_not,
            "global batch % (dp x micro) != 0");
  EXPECT_FALSE(predict(w, unit_cluster(1), Layout{1, 1, 2, 1, false}).fits);  // zero with dp 1
  Cluster small = unit_cluster(1);
  small.device_memory_bytes = 10000;  // the state alone is 16768 bytes
  const Prediction p = predict(w, small, Layout{1, 1, 2, 0, false});
  EXPECT_FALSE(p.fits);
  EXPECT_NE(p.why_not.find("needs"), std::string::npos) << p.why_not;
}

TEST(PlanEnumerate, EveryLayoutOfAWorldOnce) {
  Workload w = tiny_workload();
  w.global_batch = 8;
  // tp 1 (dp 4, 2 a rank): micro 1, 2 x zero 0, 1 = 4; tp 2 (dp 2, 4 a rank): micro 1, 2, 4 x
  // zero x sp = 12; tp 4 (dp 1): micro 1, 2, 4, 8 x sp = 8.
  EXPECT_EQ(enumerate_layouts(w, 4).size(), 24u);
  const std::vector<Prediction> ranked = rank_layouts(w, unit_cluster(4), enumerate_layouts(w, 4));
  ASSERT_EQ(ranked.size(), 24u);
  for (size_t i = 1; i < ranked.size(); ++i) {
    if (ranked[i].fits) {
      EXPECT_TRUE(ranked[i - 1].fits);
      EXPECT_LE(ranked[i - 1].step_s(), ranked[i].step_s());
    }
  }
  EXPECT_FALSE(ranked.back().fits);  // tp 4 does not divide 2 heads
  EXPECT_EQ(train_command("c.yaml", Layout{2, 2, 4, 1, true}),
            "mpirun -n 4 tessera-train c.yaml --set parallel.tp=2 --set "
            "train.micro_batch_size=4 --set optim.zero=1 --set parallel.sequence_parallel=true");
}

TEST(PlanCluster, FileErrorsNameTheKeyAndTheFix) {
  auto write = [](const std::string& text) {
    const std::string path = tessera::testing::temp_path("plan-cluster.yaml");
    std::ofstream(path) << text;
    return path;
  };
  const std::string good =
      "nodes: 2\ndevices_per_node: 8\ndevice_memory_gb: 80\nprecision: bf16\ngemm_tflops: 700\n"
      "memory_bandwidth_gbs: 2000\nintra_latency_us: 5\nintra_bandwidth_gbs: 400\n"
      "inter_latency_us: 10\ninter_bandwidth_gbs: 45\n";
  auto c = load_cluster(write(good));
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(c->devices(), 16);
  EXPECT_DOUBLE_EQ(c->gemm_flops, 700e12);
  EXPECT_DOUBLE_EQ(c->inter.bandwidth_Bps, 45e9);
  EXPECT_TRUE(c->comm_overlaps_compute);  // the default
  auto cpu = load_cluster(write(good + "comm_overlaps_compute: false\n"));
  ASSERT_TRUE(cpu.is_ok()) << cpu.status().message();
  EXPECT_FALSE(cpu->comm_overlaps_compute);
  auto bad = load_cluster(write(good + "comm_overlaps_compute: sometimes\n"));
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("'comm_overlaps_compute' must be true or false"),
            std::string::npos);
  bad = load_cluster(write(good + "gpus: 8\n"));
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("unknown key 'gpus'"), std::string::npos);
  bad = load_cluster(write("nodes: 1\n"));
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("key 'devices_per_node' is missing"), std::string::npos);
  std::string zero_bw = good;
  zero_bw.replace(zero_bw.find("intra_bandwidth_gbs: 400"), 24, "intra_bandwidth_gbs: 0");
  bad = load_cluster(write(zero_bw));
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("'intra_bandwidth_gbs' = 0 must be > 0"),
            std::string::npos);
  bad = load_cluster(tessera::testing::temp_path("no-such-cluster.yaml"));
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("not found"), std::string::npos);
}

}  // namespace
}  // namespace tessera::plan
