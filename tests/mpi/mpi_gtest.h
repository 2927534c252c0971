// gtest under mpirun, shared by the MPI and the CUDA + MPI test mains: rank 0 prints gtest's
// usual output, other ranks only their failed assertions tagged with the world rank, and the
// exit code is non-zero on every rank when any rank failed any test.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

namespace tessera::testing {

// Prints each failed assertion (and each failed test's name) of a rank other than 0 to stderr,
// so a failure seen by one rank alone is never silent.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int world_rank) : world_rank_(world_rank) {}

  // The current test is remembered here: UnitTest::current_test_info() takes the lock that gtest
  // holds while it reports a part result, so calling it from OnTestPartResult would deadlock.
  void OnTestStart(const ::testing::TestInfo& test) override { current_ = &test; }

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    const ::testing::TestInfo* test = current_;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure in %s.%s\n%s\n", world_rank_,
                 result.file_name() ? result.file_name() : "unknown", result.line_number(),
                 test ? test->test_suite_name() : "?", test ? test->name() : "?", result.message());
    std::fflush(stderr);
  }

  void OnTestEnd(const ::testing::TestInfo& test) override {
    current_ = nullptr;
    if (!test.result()->Failed()) return;
    std::fprintf(stderr, "[rank %d] [  FAILED  ] %s.%s\n", world_rank_, test.test_suite_name(),
                 test.name());
    std::fflush(stderr);
  }

 private:
  int world_rank_;
  const ::testing::TestInfo* current_ = nullptr;
};

// Runs every test on every rank (ranks other than 0 print only failures) and returns 1 on every
// rank when any rank failed; rank 0 then says so, naming `suite` ("MPI tests").
inline int run_all_tests_on_every_rank(int world_rank, const char* suite) {
  if (world_rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(world_rank));  // gtest owns it
  }
  const int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_failed && world_rank == 0) {
    std::fprintf(stderr, "%s failed on at least one rank (see [rank r] lines above)\n", suite);
  }
  return any_failed;
}

}  // namespace tessera::testing
