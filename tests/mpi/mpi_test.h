// Helpers for tests that run on every rank of an mpirun (tests/mpi/mpi_main.cpp is their
// main): tests derive from MpiTest, whose TearDown makes every rank agree on the outcome, and
// skip through LT_MPI_SKIP_IF so that either every rank skips or none does.
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>
#include <vector>

namespace lt::test {

inline int mpi_rank(MPI_Comm c = MPI_COMM_WORLD) {
  int r = 0;
  MPI_Comm_rank(c, &r);
  return r;
}
inline int mpi_world(MPI_Comm c = MPI_COMM_WORLD) {
  int n = 1;
  MPI_Comm_size(c, &n);
  return n;
}

// true on every rank if `local` is true on any rank.
inline bool mpi_any(bool local, MPI_Comm c = MPI_COMM_WORLD) {
  int in = local, out = 0;
  MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, c);
  return out != 0;
}

// The ranks (of MPI_COMM_WORLD) where `local` is true, e.g. "1, 3".
inline std::string mpi_ranks_where(bool local, MPI_Comm c = MPI_COMM_WORLD) {
  std::vector<int> all(mpi_world(c));
  int in = local;
  MPI_Allgather(&in, 1, MPI_INT, all.data(), 1, MPI_INT, c);
  std::string s;
  for (size_t r = 0; r < all.size(); r++)
    if (all[r]) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

// Rank 0's string on every rank.
inline std::string mpi_bcast_string(std::string s, MPI_Comm c = MPI_COMM_WORLD) {
  int n = (int)s.size();
  MPI_Bcast(&n, 1, MPI_INT, 0, c);
  s.resize(n);
  MPI_Bcast(s.data(), n, MPI_CHAR, 0, c);
  return s;
}

// Every test of an MPI binary derives from this. After the test body (failed, skipped or
// passed) every rank learns what the others saw: a failure on any rank fails the test on
// every rank, naming the ranks, and a skip that not all ranks took is a failure.
class MpiTest : public ::testing::Test {
 protected:
  void TearDown() override {
    const bool failed = HasFailure(), skipped = IsSkipped();
    const std::string failed_on = mpi_ranks_where(failed);
    const std::string skipped_on = mpi_ranks_where(skipped);
    const std::string ran_on = mpi_ranks_where(!skipped);
    if (!failed_on.empty() && !failed) ADD_FAILURE() << "failed on rank(s) " << failed_on;
    if (!skipped_on.empty() && !ran_on.empty())
      ADD_FAILURE() << "ranks disagree: skipped on rank(s) " << skipped_on << ", ran on rank(s) " << ran_on
                    << " (skip with LT_MPI_SKIP_IF)";
  }
};

}  // namespace lt::test

// Skips the test on every rank when `cond` holds on any rank.
#define LT_MPI_SKIP_IF(cond, msg)                                        \
  do {                                                                   \
    if (::lt::test::mpi_any(static_cast<bool>(cond))) GTEST_SKIP() << (msg); \
  } while (0)
