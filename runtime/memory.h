// How much memory a GPT job needs, estimated from the model shape and batch before anything is
// allocated, and the one check that refuses a job this machine cannot hold: a UserError giving
// the estimate and what is available, instead of std::bad_alloc (an abort) halfway through.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "runtime/model.h"
#include "runtime/tensor.h"

namespace lt {

struct MemoryPlan {
  int64_t batch = 1;           // sequences of one forward (micro_batch; eval --batch; 1 to sample)
  int64_t seq = 1;             // tokens per sequence
  int64_t micro_steps = 1;     // forwards whose per-token losses are kept until the step ends
  bool training = false;       // AdamW moments
  Device device = Device::CPU;
  DType compute = DType::F32;  // the backend's compute dtype (BF16 on CUDA by default)
  uint64_t extra_host_bytes = 0;  // host buffers the caller holds besides the model
  int64_t host_ranks = 1;         // ranks of the job on this host: they share its memory
};

// Bytes, each saturating at UINT64_MAX so no product of hostile sizes wraps around.
struct MemoryEstimate {
  uint64_t params = 0;       // parameter elements (the vocabulary padded to a multiple of 64)
  uint64_t weights = 0;      // fp32 master weights, plus the compute-dtype copy when not fp32
  uint64_t grads = 0;
  uint64_t optimizer = 0;    // AdamW m and v
  uint64_t activations = 0;  // forward/backward buffers of batch x seq tokens, logits included
  uint64_t staging = 0;      // host copy of the weights while initialising or loading them
  uint64_t host = 0;         // what lands in host memory
  uint64_t device = 0;       // what lands in device memory (0 on the CPU)
};

MemoryEstimate estimate_memory(const GPTConfig& c, const MemoryPlan& p);
// Bytes of activations alone (GPT::ensure_activations) for one forward of B x T tokens.
uint64_t activation_bytes(const GPTConfig& c, int64_t B, int64_t T, int64_t micro_steps, Device device,
                          DType compute);

// MemAvailable from /proc/meminfo; nullopt when it cannot be read (then nothing is refused).
std::optional<uint64_t> host_memory_available();
// Free memory of a CUDA device. A seam for cudaMemGetInfo: nullopt (unknown, nothing is
// refused) until a caller needs it.
std::optional<uint64_t> device_memory_available(int device_index);

// Throws UserError "<what> needs about X of <host|device> memory (<detail>), but Y is available
// (<source>)" when `bytes` exceeds what is available on `device`.
void require_memory(uint64_t bytes, Device device, int device_index, const std::string& what,
                    const std::string& detail = "");

// estimate_memory + require_memory for host and device. `what` names the job ("train", "eval").
void check_model_memory(const GPTConfig& c, const MemoryPlan& p, const std::string& what, int device_index = 0);

std::string format_bytes(uint64_t bytes);  // "1.5 GiB"

}  // namespace lt
