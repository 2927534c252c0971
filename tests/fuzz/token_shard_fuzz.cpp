// Fuzzes the token-shard reader (data/token_shard.h) and the loader over it (data/data_loader.h)
// with arbitrary file contents. Properties: open never crashes, refuses with a message, and
// accepts a file only when its length is the header plus count tokens of the version's width;
// an accepted shard reads every token alike through token() and copy(); the DataLoader over it
// (T = 3) either refuses the batch with a message or fills it with tokens of the shard.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/data_loader.h"
#include "data/token_shard.h"
#include "fuzz_util.h"

namespace {

using tessera::data::TokenShard;

void write_seeds(const std::string& dir) {
  const std::vector<int32_t> few = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  if (!tessera::data::write_token_shard(dir + "/u16.bin", few, 50257).is_ok() ||
      !tessera::data::write_token_shard(dir + "/u32.bin", {70000, 1, 65535, 65536, 2}, 100000)
           .is_ok() ||
      !tessera::data::write_token_shard(dir + "/empty.bin", {}, 16).is_ok()) {
    tessera::fuzz::fail("cannot write the seeds to " + dir);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const std::string dir = tessera::fuzz::seed_dir(); !dir.empty()) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = tessera::fuzz::scratch_path("shard.bin");
  tessera::fuzz::write_file(path, data, size);
  tessera::core::Result<TokenShard> shard = TokenShard::open(path);
  if (!shard) {
    TESSERA_FUZZ_CHECK(!shard.status().message().empty(), "a refusal without a message");
    return 0;
  }
  const int64_t width = shard->version() == tessera::data::kShardVersionU16 ? 2 : 4;
  TESSERA_FUZZ_CHECK(static_cast<int64_t>(size) == 1024 + width * shard->size(),
                     "accepted a file whose length is not header + tokens");
  std::vector<int32_t> all(static_cast<size_t>(shard->size()));
  shard->copy(0, shard->size(), all.data());
  for (int64_t i = 0; i < shard->size(); ++i) {
    TESSERA_FUZZ_CHECK(shard->token(i) == all[static_cast<size_t>(i)], "token() != copy()");
  }
  const int64_t T = 3;
  auto loader = tessera::data::DataLoader::open(path, T, 1337);
  if (!loader) {
    TESSERA_FUZZ_CHECK(!loader.status().message().empty(), "a refusal without a message");
    return 0;
  }
  const int64_t batch = 2;
  if (tessera::core::Status st = loader->validate_batch(batch); !st.is_ok()) {
    TESSERA_FUZZ_CHECK(!st.message().empty(), "a refusal without a message");
    return 0;
  }
  std::vector<int32_t> inputs(batch * T), targets(batch * T);
  for (int step = 0; step < 3; ++step) {
    loader->next_batch(batch, 0, batch, inputs.data(), targets.data());
    for (int64_t s = 0; s < batch; ++s) {
      for (int64_t t = 0; t + 1 < T; ++t) {
        TESSERA_FUZZ_CHECK(targets[s * T + t] == inputs[s * T + t + 1],
                           "targets are not the inputs shifted by one");
      }
    }
  }
  return 0;
}
