// Checks shared by the data-parallel tests that run on every rank of an mpirun
// (tests/mpi/test_dp_mpi.cpp, tests/cuda/test_nccl_emulated.cpp): a directory every rank
// sees, a training run that records its parameters after every step and whether the ranks
// agreed on them, a checkpoint's optimizer moments, element-wise closeness of two vectors.
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "runtime/comm.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"
#include "runtime/trainer.h"
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

inline uint64_t fnv(const std::vector<float>& v) {
  const uint8_t* b = reinterpret_cast<const uint8_t*>(v.data());
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < v.size() * 4; i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

// The hash of `params` on every rank of `c` (an independent check, not the checksum under
// test); the number of ranks that differ from rank 0.
inline int ranks_differing(const std::vector<float>& params, MPI_Comm c) {
  unsigned long long mine = fnv(params);
  std::vector<unsigned long long> all(mpi_world(c));
  MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, all.data(), 1, MPI_UNSIGNED_LONG_LONG, c);
  int bad = 0;
  for (auto h : all) bad += h != all[0];
  return bad;
}

struct RunOut {
  TrainResult result;
  int steps_with_differing_params = 0;
  std::vector<float> final_params;
};

// run_train on `comm` (borrowed), quiet; after every step the parameters (host copy) and, over
// `check_comm` (MPI_COMM_NULL: no check), whether every rank holds the same.
inline RunOut train(Communicator& comm, MPI_Comm check_comm, const std::string& config, const std::string& out,
                    bool resume = false, const BackendOptions& backend = {}) {
  RunOut r;
  TrainOptions o;
  o.config_path = config;
  o.out_dir = out;
  o.quiet = true;
  o.resume = resume;
  o.comm = &comm;
  o.backend = backend;
  o.on_step = [&](int64_t, const GPT& model) {
    r.final_params = model.backend().to_host_f32(model.params());
    if (check_comm != MPI_COMM_NULL && ranks_differing(r.final_params, check_comm) != 0) r.steps_with_differing_params++;
  };
  r.result = run_train(o);
  return r;
}

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
