// Where the tests' data files are (tests/data): TESSERA_TEST_DATA_DIR, set by tests/CMakeLists.txt.
#pragma once

#include <string>

namespace tessera::testing {

inline const std::string kDataDir = TESSERA_TEST_DATA_DIR;

}  // namespace tessera::testing
