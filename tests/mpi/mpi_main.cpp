// main() for the MPI test binaries (run under mpirun -np N): initialises MPI, prints gtest's
// progress from rank 0 and any other rank's failures prefixed with its rank, and returns
// non-zero on EVERY rank when any rank saw a failure, so mpirun and ctest cannot report
// success for a job where one rank failed. Per-test agreement is MpiTest's (mpi_test.h).
//
// LT_MPI_TEST_INJECT=fail:R or skip:R makes the MpiMain.Inject test fail or skip on rank R
// only (test_dp_cli checks the agreement with it).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/mpi/mpi_test.h"

namespace {

// Rank r > 0: failures only, each line prefixed with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                 r.line_number(), r.summary());
  }
  void OnTestEnd(const ::testing::TestInfo& t) override {
    if (t.result()->Failed())
      std::fprintf(stderr, "[rank %d] [  FAILED  ] %s.%s\n", rank_, t.test_suite_name(), t.name());
  }

 private:
  int rank_;
};

}  // namespace

namespace lt::test {

// The agreement itself, exercised on purpose by test_dp_cli through LT_MPI_TEST_INJECT.
TEST_F(MpiTest, MpiMainInject) {
  const char* v = std::getenv("LT_MPI_TEST_INJECT");
  const std::string inject = v ? v : "";
  const int rank = mpi_rank();
  if (inject.rfind("agreed-skip:", 0) == 0)  // every rank takes part in the agreement
    LT_MPI_SKIP_IF(inject == "agreed-skip:" + std::to_string(rank), "injected skip, agreed by all ranks");
  else if (inject == "skip:" + std::to_string(rank))
    GTEST_SKIP() << "injected skip on rank " << rank << " only";
  EXPECT_NE(inject, "fail:" + std::to_string(rank)) << "injected failure on rank " << rank;
}

}  // namespace lt::test

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  const int rank = lt::test::mpi_rank(), world = lt::test::mpi_world();
  ::testing::InitGoogleTest(&argc, argv);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  const int rc = RUN_ALL_TESTS();
  const bool failed = rc != 0;
  const std::string failed_on = lt::test::mpi_ranks_where(failed);
  const bool any = !failed_on.empty();
  if (any)
    std::fprintf(stderr, "[rank %d/%d] FAILED: failures on rank(s) %s; exiting 1\n", rank, world, failed_on.c_str());
  else if (rank == 0)
    std::printf("[rank 0/%d] all ranks passed\n", world);
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Finalize();
  return any ? 1 : 0;
}
