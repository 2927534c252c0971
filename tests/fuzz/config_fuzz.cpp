// Fuzzes the config loader (core/config.h): YAML text with --set overrides.
// Input: the YAML text, then optionally a NUL byte and NUL-separated override strings
// ("train.steps=100"). Properties: parse_config never crashes or throws, a refusal carries a
// message, and an accepted config's resolved YAML (to_yaml, what checkpoints store) parses back
// to the same config.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tessera::core::Config;
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string yaml = input.substr(0, nul);
  std::vector<std::string> overrides;
  for (size_t begin = nul; begin != std::string::npos && begin < input.size();) {
    const size_t end = input.find('\0', begin + 1);
    overrides.push_back(input.substr(begin + 1, end == std::string::npos ? end : end - begin - 1));
    begin = end;
  }
  tessera::core::Result<Config> config = tessera::core::parse_config(yaml, "fuzz.yaml", overrides);
  if (!config) {
    TESSERA_FUZZ_CHECK(!config.status().message().empty(), "a refusal without a message");
    return 0;
  }
  const std::string resolved = config->to_yaml();
  tessera::core::Result<Config> again = tessera::core::parse_config(resolved, "resolved", {});
  TESSERA_FUZZ_CHECK(again.is_ok(), "the resolved config does not parse: " +
                                        again.status().message() + "\n" + resolved);
  TESSERA_FUZZ_CHECK(*again == *config, "the resolved config reads back different:\n" + resolved);
  return 0;
}
