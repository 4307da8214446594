// Checks shared by the data-parallel tests that run on every rank of an mpirun
// (tests/mpi/test_dp_mpi.cpp, tests/cuda/test_nccl_emulated.cpp): a directory every rank
// sees, a checkpoint's optimizer moments, element-wise closeness of two vectors.
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "runtime/safetensors.h"
#include "tests/mpi/mpi_test.h"
#include "tests/util.h"

namespace lt::test {

// A directory every rank sees (rank 0 creates it and removes it at the end).
struct SharedDir {
  std::unique_ptr<TempDir> owner;
  std::string path;
  SharedDir() {
    if (mpi_rank() == 0) {
      owner = std::make_unique<TempDir>();
      path = owner->path.string();
    }
    path = mpi_bcast_string(path);
  }
  ~SharedDir() { MPI_Barrier(MPI_COMM_WORLD); }  // nobody still reads it when rank 0 removes it
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

// The moments of a checkpoint's optimizer.safetensors.
inline std::vector<float> moments(const std::string& ckpt, const char* name) {
  SafetensorsReader r(ckpt + "/optimizer.safetensors");
  const StTensorInfo& t = r.at(name);
  std::vector<float> v((size_t)t.numel());
  r.read_f32(t, v.data());
  return v;
}

// Every |a - b| within rel x max|b|.
inline void expect_all_near(const std::vector<float>& a, const std::vector<float>& b, float rel,
                            const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  float scale = 0;
  for (float x : b) scale = std::max(scale, std::fabs(x));
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < a.size(); i++)
    if (std::fabs(a[i] - b[i]) > rel * scale && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << what << ": first at " << first << ": " << a[first] << " vs " << b[first];
}

}  // namespace lt::test
