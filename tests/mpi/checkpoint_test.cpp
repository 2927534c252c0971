// Checkpoints at 1, 2 and 4 ranks: any grid reads what any grid wrote (weights and AdamW moments
// bitwise equal to a 1 x 1 copy's slices), checksums that do not depend on the writer's grid,
// corrupt / truncated / wrong-version / other-config files failing alike on every rank, h5dump
// reading the file, and a crash mid-write leaving `latest` loadable.
#include "checkpoint/checkpoint.h"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <mpi.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checksum.h"
#include "core/error.h"
#include "models/gpt.h"
#include "mpi_test_util.h"
#include "optim/optimizer.h"
#include "parallel/process_grid.h"

namespace tessera::checkpoint {
namespace {

using tessera::testing::world_rank;
using tessera::testing::world_size;

namespace fs = std::filesystem;

void barrier() { MPI_Barrier(MPI_COMM_WORLD); }

// A directory all ranks share (rank 0 names and makes it), removed by rank 0 at exit. The first
// call is collective over MPI_COMM_WORLD.
const std::string& shared_dir() {
  struct Dir {
    std::string path;
    bool owner = false;
    ~Dir() {
      std::error_code ec;
      if (owner) fs::remove_all(path, ec);
    }
  };
  static const Dir dir = [] {
    Dir d;
    d.owner = world_rank() == 0;
    if (d.owner) {
      d.path = (fs::temp_directory_path() / ("tessera_ckpt_test_" + std::to_string(::getpid())))
                   .string();
      fs::create_directories(d.path);
    }
    uint64_t n = d.path.size();
    MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    d.path.resize(n);
    MPI_Bcast(d.path.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
    return d;
  }();
  return dir.path;
}

std::string shared_path(const std::string& name) { return shared_dir() + "/" + name; }

core::Config test_config() {
  core::Config c;
  c.model.vocab_size = 300;
  c.model.pad_vocab_to = 128;  // Vp = 384: divisible by 1, 2, 4
  c.model.max_seq_len = 16;
  c.model.n_layer = 2;
  c.model.n_head = 4;
  c.model.n_embd = 32;
  c.train.seq_len = 16;
  c.train.batch_size = 4;
  return c;
}

// One rank's model and optimizer on a grid of `comm` with tp ranks per group.
struct Replica {
  parallel::ProcessGrid grid;
  models::Gpt model;
  optim::AdamW adamw;
  Replica(MPI_Comm comm, int tp, const core::ModelConfig& m = test_config().model)
      : grid(comm, tp), model(m, 1, 16, &grid.tp_comm()), adamw(model.param_set()) {}
};

// The tp sizes a grid over MPI_COMM_WORLD can have here.
std::vector<int> world_tps() {
  std::vector<int> tps;
  for (int tp : {1, 2, 4}) {
    if (world_size() % tp == 0) tps.push_back(tp);
  }
  return tps;
}

// A moment value: a pure function of (parameter, global index, salt), so any layout fills the
// same global tensor. v is kept positive like a real second moment.
float moment_value(const std::string& name, int64_t g, uint64_t salt, bool positive) {
  const uint64_t h = mix64(params::init_stream(name) ^ mix64(static_cast<uint64_t>(g) + salt));
  const float u = static_cast<float>(h >> 40) / static_cast<float>(1 << 24);  // [0, 1)
  return positive ? u * 1e-3f : u - 0.5f;
}

// Weights from `seed` and both moments from salts derived from it.
void fill(Replica& r, uint64_t seed) {
  r.model.init_weights(seed);
  const params::ParamSet& ps = r.model.param_set();
  for (int i = 0; i < ps.size(); ++i) {
    const params::ParamSpec& s = ps.specs()[i];
    float* m = ps.view(r.adamw.m(), i).f32();
    float* v = ps.view(r.adamw.v(), i).f32();
    for (int64_t j = 0; j < ps.local_numel(i); ++j) {
      const int64_t g = s.global_index(j, ps.tp_rank(), ps.tp_size());
      m[j] = moment_value(s.name, g, 2 * seed, false);
      v[j] = moment_value(s.name, g, 2 * seed + 1, true);
    }
  }
}

// Counts elements of every shard of `r` (weights, m, v) whose bits differ from the 1 x 1
// reference's element at the same global index; one EXPECT per parameter and arena.
void expect_shards_equal_reference(const Replica& r, const Replica& ref, const std::string& what) {
  const params::ParamSet& ps = r.model.param_set();
  const params::ParamSet& ref_ps = ref.model.param_set();
  const core::Tensor* arenas[3][2] = {{&r.model.weights(), &ref.model.weights()},
                                      {&r.adamw.m(), &ref.adamw.m()},
                                      {&r.adamw.v(), &ref.adamw.v()}};
  const char* arena_names[3] = {"weights", "m", "v"};
  for (int a = 0; a < 3; ++a) {
    for (int i = 0; i < ps.size(); ++i) {
      const params::ParamSpec& s = ps.specs()[i];
      const float* got = ps.view(*arenas[a][0], i).f32();
      const float* want = ref_ps.view(*arenas[a][1], i).f32();
      int64_t mismatches = 0;
      for (int64_t j = 0; j < ps.local_numel(i); ++j) {
        const int64_t g = s.global_index(j, ps.tp_rank(), ps.tp_size());
        mismatches += std::memcmp(&got[j], &want[g], sizeof(float)) != 0;
      }
      EXPECT_EQ(mismatches, 0) << what << ": " << arena_names[a] << " " << s.name << " (tp rank "
                               << ps.tp_rank() << " of " << ps.tp_size() << ")";
    }
  }
}

TrainState test_state(int64_t step) {
  TrainState s;
  s.step = step;
  s.tokens_seen = 123456789012;
  s.seed = 0xdeadbeefcafef00dull;
  s.data_epoch = 3;
  s.data_position = 77;
  return s;
}

// Writes a checkpoint of a WORLD grid with tp ranks per group: dp replica 0 holds the values of
// seed 11, other replicas garbage (seed 99) that must never reach the file.
core::Status write_test_checkpoint(const std::string& path, int tp, bool with_optimizer,
                                   int64_t step = 100, uint64_t seed = 11,
                                   Transfers transfers = Transfers::kIndependent) {
  Replica w(MPI_COMM_WORLD, tp);
  fill(w, w.grid.dp_rank() == 0 ? seed : 99);
  return write_checkpoint(path, w.model, with_optimizer ? &w.adamw : nullptr, test_state(step),
                          test_config(), w.grid, transfers);
}

// Both transfer modes, and their names for messages.
constexpr Transfers kBothTransfers[] = {Transfers::kIndependent, Transfers::kCollective};
std::string transfers_name(Transfers t) {
  return t == Transfers::kCollective ? "collective" : "independent";
}

// ---- serial HDF5 helpers (rank 0 inspects and damages files) ----

// The "checksum" attribute of every dataset in `names`.
std::vector<uint64_t> stored_checksums(const std::string& path,
                                       const std::vector<std::string>& names) {
  std::vector<uint64_t> out;
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  EXPECT_GE(f, 0) << path;
  for (const std::string& n : names) {
    uint64_t v = 0;
    const hid_t a = H5Aopen_by_name(f, n.c_str(), "checksum", H5P_DEFAULT, H5P_DEFAULT);
    EXPECT_GE(a, 0) << n;
    EXPECT_GE(H5Aread(a, H5T_NATIVE_UINT64, &v), 0) << n;
    H5Aclose(a);
    out.push_back(v);
  }
  H5Fclose(f);
  return out;
}

int64_t root_int(const std::string& path, const char* name) {
  int64_t v = -1;
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t a = H5Aopen(f, name, H5P_DEFAULT);
  EXPECT_GE(H5Aread(a, H5T_NATIVE_INT64, &v), 0) << name;
  H5Aclose(a);
  H5Fclose(f);
  return v;
}

// Flips every bit of one byte in the middle of `dataset`'s data, with plain file I/O.
void corrupt_dataset(const std::string& path, const std::string& dataset) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
  const haddr_t offset = H5Dget_offset(d);
  const hsize_t bytes = H5Dget_storage_size(d);
  H5Dclose(d);
  H5Fclose(f);
  ASSERT_NE(offset, HADDR_UNDEF) << dataset;
  ASSERT_GT(bytes, 0u) << dataset;
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  const std::streamoff at = static_cast<std::streamoff>(offset + bytes / 2);
  char c = 0;
  file.seekg(at);
  file.read(&c, 1);
  c = static_cast<char>(~c);
  file.seekp(at);
  file.write(&c, 1);
  ASSERT_TRUE(file.good()) << path;
}

// Expects read_checkpoint at every world grid and at 1 x 1 (MPI_COMM_SELF) to fail with a message
// holding `needle`, and read_checkpoint_config too when `config_also`.
void expect_read_fails_everywhere(const std::string& path, const std::string& needle,
                                  const core::ModelConfig& m = test_config().model,
                                  bool with_optimizer = true) {
  std::vector<std::pair<MPI_Comm, int>> grids;
  for (int tp : world_tps()) grids.push_back({MPI_COMM_WORLD, tp});
  grids.push_back({MPI_COMM_SELF, 1});
  for (const auto& [comm, tp] : grids) {
    for (Transfers transfers : kBothTransfers) {
      Replica r(comm, tp, m);
      core::Result<TrainState> got =
          read_checkpoint(path, r.model, with_optimizer ? &r.adamw : nullptr, r.grid, transfers);
      const std::string grid_text = (comm == MPI_COMM_SELF ? "self" : "world") +
                                    std::string(" tp ") + std::to_string(tp) + ", " +
                                    transfers_name(transfers) + " transfers";
      ASSERT_FALSE(got.is_ok()) << grid_text;
      EXPECT_NE(got.status().message().find(needle), std::string::npos)
          << grid_text << ": " << got.status().message();
      EXPECT_NE(got.status().message().find("checkpoint '" + path + "'"), std::string::npos)
          << got.status().message();
    }
  }
}

std::vector<std::string> model_dataset_names(bool with_optimizer) {
  std::vector<std::string> names;
  const std::vector<params::ParamSpec> specs = models::Gpt::param_specs(test_config().model);
  for (const char* group : {"/model/", "/optim/m/", "/optim/v/"}) {
    if (!with_optimizer && std::string(group) != "/model/") continue;
    for (const params::ParamSpec& s : specs) names.push_back(group + s.name);
  }
  return names;
}

// ---- tests ----

TEST(Checkpoint, AnyGridReadsWhatAnyGridWrote) {
  shared_dir();
  Replica ref(MPI_COMM_SELF, 1);
  fill(ref, 11);
  const core::Config config = test_config();
  for (int tp_w : world_tps()) {
    const std::string path = shared_path("any_w" + std::to_string(tp_w) + ".h5");
    for (Transfers written_with : kBothTransfers) {
      core::Status s = write_test_checkpoint(path, tp_w, true, 100 + tp_w, 11, written_with);
      ASSERT_TRUE(s.is_ok()) << s.message();
      std::vector<std::pair<MPI_Comm, int>> readers;
      for (int tp : world_tps()) readers.push_back({MPI_COMM_WORLD, tp});
      readers.push_back({MPI_COMM_SELF, 1});
      for (const auto& [comm, tp_r] : readers) {
        for (Transfers read_with : kBothTransfers) {
          Replica r(comm, tp_r);
          fill(r, 55);  // overwritten by the read
          core::Result<TrainState> got =
              read_checkpoint(path, r.model, &r.adamw, r.grid, read_with);
          const std::string what =
              "written at tp " + std::to_string(tp_w) + " (" + transfers_name(written_with) +
              "), read at " + (comm == MPI_COMM_SELF ? "1x1 self" : "tp " + std::to_string(tp_r)) +
              " (" + transfers_name(read_with) + ")";
          ASSERT_TRUE(got.is_ok()) << what << ": " << got.status().message();
          EXPECT_EQ(*got, test_state(100 + tp_w)) << what;
          expect_shards_equal_reference(r, ref, what);
        }
      }
    }
    Replica any(MPI_COMM_WORLD, tp_w);
    core::Result<std::string> yaml = read_checkpoint_config(path, any.grid);
    ASSERT_TRUE(yaml.is_ok()) << yaml.status().message();
    EXPECT_EQ(*yaml, config.to_yaml());
    if (world_rank() == 0) {
      EXPECT_EQ(root_int(path, "grid_tp"), tp_w);
      EXPECT_EQ(root_int(path, "grid_dp"), world_size() / tp_w);
      EXPECT_EQ(root_int(path, "format_version"), kFormatVersion);
    }
  }
}

TEST(Checkpoint, ChecksumsDoNotDependOnTheWriterGrid) {
  shared_dir();
  Replica ref(MPI_COMM_SELF, 1);
  fill(ref, 11);
  // The expected checksums: whole tensors of the 1 x 1 reference.
  std::vector<uint64_t> expected;
  const params::ParamSet& ps = ref.model.param_set();
  for (const core::Tensor* arena : {&ref.model.weights(), &ref.adamw.m(), &ref.adamw.v()}) {
    for (int i = 0; i < ps.size(); ++i) {
      expected.push_back(tensor_checksum(ps.view(*arena, i).f32(), ps.local_numel(i)));
    }
  }
  for (int tp_w : world_tps()) {
    for (Transfers transfers : kBothTransfers) {
      const std::string path = shared_path("sums_w" + std::to_string(tp_w) + ".h5");
      core::Status s = write_test_checkpoint(path, tp_w, true, 100, 11, transfers);
      ASSERT_TRUE(s.is_ok()) << s.message();
      if (world_rank() == 0) {
        EXPECT_EQ(stored_checksums(path, model_dataset_names(true)), expected)
            << "tp " << tp_w << ", " << transfers_name(transfers) << " transfers";
      }
    }
  }
}

TEST(Checkpoint, ACorruptDatasetIsNamedOnEveryRank) {
  shared_dir();
  // One 3-part sharded weight, one row-parallel weight and one replicated moment.
  for (const std::string dataset :
       {"/model/h.1.attn.qkv.weight", "/model/h.0.mlp.proj.weight", "/optim/v/h.0.ln_1.weight"}) {
    const std::string path = shared_path("corrupt.h5");
    core::Status s = write_test_checkpoint(path, world_size(), true);
    ASSERT_TRUE(s.is_ok()) << s.message();
    if (world_rank() == 0) corrupt_dataset(path, dataset);
    barrier();
    expect_read_fails_everywhere(path, "dataset " + dataset + " checksum mismatch (stored 0x");
    expect_read_fails_everywhere(path, "the file is corrupt; use an earlier checkpoint");
    barrier();
  }
}

TEST(Checkpoint, ATruncatedFileFailsOnEveryRank) {
  shared_dir();
  const std::string path = shared_path("truncated.h5");
  core::Status s = write_test_checkpoint(path, 1, true);
  ASSERT_TRUE(s.is_ok()) << s.message();
  if (world_rank() == 0) fs::resize_file(path, fs::file_size(path) / 2);
  barrier();
  expect_read_fails_everywhere(path, "cannot be opened as an HDF5 file (truncated");
  Replica any(MPI_COMM_WORLD, 1);
  core::Result<std::string> yaml = read_checkpoint_config(path, any.grid);
  ASSERT_FALSE(yaml.is_ok());
  EXPECT_NE(yaml.status().message().find("truncated"), std::string::npos);
  barrier();
}

TEST(Checkpoint, AnotherFormatVersionFailsOnEveryRank) {
  shared_dir();
  const std::string path = shared_path("version.h5");
  core::Status s = write_test_checkpoint(path, world_size(), true);
  ASSERT_TRUE(s.is_ok()) << s.message();
  if (world_rank() == 0) {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    const int seven = 7;
    EXPECT_GE(H5Awrite(a, H5T_NATIVE_INT, &seven), 0);
    H5Aclose(a);
    H5Fclose(f);
  }
  barrier();
  expect_read_fails_everywhere(path, "format version 7 is not supported (this build reads 1)");
  Replica any(MPI_COMM_WORLD, world_size());
  core::Result<std::string> yaml = read_checkpoint_config(path, any.grid);
  ASSERT_FALSE(yaml.is_ok());
  EXPECT_NE(yaml.status().message().find("format version 7 is not supported"), std::string::npos)
      << yaml.status().message();
  barrier();
}

TEST(Checkpoint, AnotherModelConfigIsNamed) {
  shared_dir();
  const std::string path = shared_path("config.h5");
  core::Status s = write_test_checkpoint(path, 1, true);
  ASSERT_TRUE(s.is_ok()) << s.message();
  core::ModelConfig wider = test_config().model;
  wider.n_embd = 64;
  expect_read_fails_everywhere(path, "/model/wte has shape (384, 32), the model expects (384, 64)",
                               wider);
  expect_read_fails_everywhere(path, "model.n_embd 32 in the checkpoint, 64 in this model", wider);
  core::ModelConfig deeper = test_config().model;
  deeper.n_layer = 3;
  expect_read_fails_everywhere(path, "model.n_layer 2 in the checkpoint, 3 in this model", deeper);
  core::ModelConfig shallower = test_config().model;
  shallower.n_layer = 1;
  expect_read_fails_everywhere(path, "model.n_layer 2 in the checkpoint, 1 in this model",
                               shallower);
}

TEST(Checkpoint, OptimizerStateIsOptional) {
  shared_dir();
  const std::string path = shared_path("weights_only.h5");
  core::Status s = write_test_checkpoint(path, world_size(), false);
  ASSERT_TRUE(s.is_ok()) << s.message();
  expect_read_fails_everywhere(path, "has no optimizer state");
  Replica ref(MPI_COMM_SELF, 1);
  fill(ref, 11);
  for (int tp : world_tps()) {
    Replica r(MPI_COMM_WORLD, tp);
    fill(r, 55);
    core::Result<TrainState> got = read_checkpoint(path, r.model, nullptr, r.grid);
    ASSERT_TRUE(got.is_ok()) << got.status().message();
    const params::ParamSet& ps = r.model.param_set();
    int64_t mismatches = 0;
    for (int i = 0; i < ps.size(); ++i) {
      const params::ParamSpec& spec = ps.specs()[i];
      const float* got_w = ps.view(r.model.weights(), i).f32();
      const float* want_w = ref.model.param_set().view(ref.model.weights(), i).f32();
      for (int64_t j = 0; j < ps.local_numel(i); ++j) {
        const int64_t g = spec.global_index(j, ps.tp_rank(), ps.tp_size());
        mismatches += std::memcmp(&got_w[j], &want_w[g], sizeof(float)) != 0;
      }
    }
    EXPECT_EQ(mismatches, 0) << "tp " << tp;
  }
  if (world_rank() == 0) {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    EXPECT_EQ(H5Lexists(f, "/optim", H5P_DEFAULT), 0);
    H5Fclose(f);
  }
}

TEST(Checkpoint, H5dumpReadsTheFile) {
  shared_dir();
  const std::string path = shared_path("dump.h5");
  core::Status s = write_test_checkpoint(path, world_size(), true);
  ASSERT_TRUE(s.is_ok()) << s.message();
  if (world_rank() == 0) {
    auto run = [](const std::string& command, std::string* out) {
      FILE* pipe = popen((command + " 2>&1").c_str(), "r");
      if (pipe == nullptr) return -1;
      char buf[4096];
      size_t n;
      while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out->append(buf, n);
      const int status = pclose(pipe);
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    };
    std::string header;
    EXPECT_EQ(run("h5dump -H '" + path + "'", &header), 0) << header;
    for (const char* needle :
         {"GROUP \"model\"", "DATASET \"wte\"", "DATASET \"h.0.attn.qkv.weight\"",
          "GROUP \"optim\"", "H5T_IEEE_F32LE", "DATASPACE  SIMPLE { ( 384, 32 ) / ( 384, 32 ) }",
          "ATTRIBUTE \"checksum\"", "ATTRIBUTE \"config_yaml\"", "ATTRIBUTE \"format_version\"",
          "ATTRIBUTE \"grid_tp\"", "ATTRIBUTE \"data_position\""}) {
      EXPECT_NE(header.find(needle), std::string::npos) << needle << "\n" << header.substr(0, 3000);
    }
    // The data, too: a layernorm weight initialised to ones.
    std::string data;
    EXPECT_EQ(run("h5dump -d /model/h.0.ln_1.weight '" + path + "'", &data), 0) << data;
    EXPECT_NE(data.find("1, 1, 1, 1"), std::string::npos) << data;
  }
  barrier();
}

TEST(Checkpoint, ACrashMidWriteLeavesLatestLoadable) {
  shared_dir();
  const std::string dir = shared_path("crash");
  if (world_rank() == 0) fs::create_directories(dir);
  barrier();
  const int tp = world_size();
  const std::string first = checkpoint_path(dir, 1);
  core::Status s = write_test_checkpoint(first, tp, true, 1, 11);
  ASSERT_TRUE(s.is_ok()) << s.message();
  int published = 1;
  if (world_rank() == 0) {
    core::Status p = publish_latest(dir, first, 2);
    EXPECT_TRUE(p.is_ok()) << p.message();
    published = p.is_ok();
  }
  MPI_Bcast(&published, 1, MPI_INT, 0, MPI_COMM_WORLD);
  ASSERT_TRUE(published);

  // Step 2 dies after 3 datasets, then a step 3 dies after all its datasets, before the rename.
  const std::string second = checkpoint_path(dir, 2);
  for (const char* after : {"3", "100000"}) {
    setenv("TESSERA_CKPT_CRASH_AFTER", after, 1);
    EXPECT_THROW(static_cast<void>(write_test_checkpoint(second, tp, true, 2, 12)), tessera::Error)
        << after;
    unsetenv("TESSERA_CKPT_CRASH_AFTER");
    barrier();
    EXPECT_FALSE(fs::exists(second)) << after;
    EXPECT_TRUE(fs::exists(second + ".tmp")) << after;
  }

  core::Result<std::string> latest = resolve_checkpoint(dir, "latest");
  ASSERT_TRUE(latest.is_ok()) << latest.status().message();
  EXPECT_EQ(fs::path(*latest), fs::path(first));
  Replica ref(MPI_COMM_SELF, 1);
  fill(ref, 11);
  for (int tp_r : world_tps()) {
    Replica r(MPI_COMM_WORLD, tp_r);
    core::Result<TrainState> got = read_checkpoint(*latest, r.model, &r.adamw, r.grid);
    ASSERT_TRUE(got.is_ok()) << got.status().message();
    EXPECT_EQ(got->step, 1);
    expect_shards_equal_reference(r, ref, "latest after a crash, tp " + std::to_string(tp_r));
  }
  barrier();
}

TEST(Checkpoint, AMissingDirectoryIsAnErrorNotACrash) {
  shared_dir();
  const std::string path = shared_path("no/such/dir/step.h5");
  core::Status s = write_test_checkpoint(path, 1, true);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("does not exist"), std::string::npos) << s.message();
  Replica r(MPI_COMM_WORLD, 1);
  core::Result<TrainState> got = read_checkpoint(path, r.model, &r.adamw, r.grid);
  ASSERT_FALSE(got.is_ok());
  EXPECT_NE(got.status().message().find("not found"), std::string::npos);
}

TEST(Checkpoint, RanksGivenDifferentPathsFailAloneOnEveryRank) {
  shared_dir();
  // Each rank names its own file: a collective open of different files would hang.
  const std::string path =
      shared_path("per-rank-" + std::to_string(tessera::testing::world_rank()) + ".h5");
  core::Status s = write_test_checkpoint(path, 1, true);
  if (tessera::testing::world_size() == 1) {
    EXPECT_TRUE(s.is_ok()) << s.message();
    return;
  }
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("the ranks were given different paths"), std::string::npos)
      << s.message();
  Replica r(MPI_COMM_WORLD, 1);
  core::Result<TrainState> got = read_checkpoint(path, r.model, &r.adamw, r.grid);
  ASSERT_FALSE(got.is_ok());
  EXPECT_NE(got.status().message().find("different paths"), std::string::npos);
}

}  // namespace
}  // namespace tessera::checkpoint
