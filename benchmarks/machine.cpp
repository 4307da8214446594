// Machine description and peaks (see machine.h).
#include "benchmarks/machine.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

#ifdef LEASETRAIN_HAVE_CUDA
#include "benchmarks/cuda/device_info.h"
#endif
#ifdef LEASETRAIN_HAVE_NCCL
#include <nccl.h>
#endif

namespace lt::bench {

using json = nlohmann::json;

const char* const kMfuFormula =
    "MFU = tokens/s x (6 x params + 6 x n_layer x n_embd x seq) FLOP per token / peak (PaLM appendix B, llm.c)";

namespace {

// /proc/cpuinfo: the model name, the ISA flags that set the FMA width, and the mean of the
// current "cpu MHz" readings (what the cores ran at during the suite).
json describe_cpu() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, model = "unknown", flags;
  double mhz_sum = 0;
  int mhz_n = 0;
  while (std::getline(f, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), val = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    if (key == "model name") model = val;
    if (key == "flags" && flags.empty()) flags = " " + val + " ";
    if (key == "cpu MHz") {
      mhz_sum += std::atof(val.c_str());
      mhz_n++;
    }
  }
  const bool avx512f = flags.find(" avx512f ") != std::string::npos;
  const bool avx2_fma = flags.find(" avx2 ") != std::string::npos && flags.find(" fma ") != std::string::npos;
  const char* blas = openblas_get_config();
  return json{{"model", model},
              {"online_cpus", (int)sysconf(_SC_NPROCESSORS_ONLN)},
              {"threads", omp_get_max_threads()},
              {"mhz", mhz_n ? std::round(mhz_sum / mhz_n) : 0.0},
              {"isa", avx512f ? "avx512f" : avx2_fma ? "avx2+fma" : "sse"},
              {"fp32_flops_per_clk_core", cpu_fp32_flops_per_clk_core(avx512f, avx2_fma)},
              {"blas", blas ? std::string("OpenBLAS ") + blas : "unknown"}};
}

[[maybe_unused]] std::string version_string(int v, int major_div) {  // 13000 -> "13.0", 22809 -> "2.28.9"
  if (v <= 0) return "";
  std::ostringstream s;
  if (major_div == 1000)
    s << v / 1000 << "." << (v % 1000) / 10;
  else
    s << v / 10000 << "." << (v % 10000) / 100 << "." << v % 100;
  return s.str();
}

}  // namespace

json describe_machine(const std::string& device, double sm_clock_mhz) {
  json m;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  m["hostname"] = host;
  m["device"] = device;
  m["cpu"] = describe_cpu();
  m["gpu"] = nullptr;
  m["gpu_status"] = "this build has no CUDA (configure with the CUDA toolkit to benchmark GPUs)";
  std::string nccl;
#ifdef LEASETRAIN_HAVE_NCCL
  int nv = 0;
  if (ncclGetVersion(&nv) == ncclSuccess) nccl = version_string(nv, 10000);
#endif
  json peak;
#ifdef LEASETRAIN_HAVE_CUDA
  GpuInfo g = query_gpu(0);
  if (g.count == 0) {
    m["gpu_status"] = g.why;
  } else {
    m["gpu_status"] = "ok";
    const double run_clock = sm_clock_mhz > 0 ? sm_clock_mhz : read_sm_clock_mhz(0);
    m["gpu"] = json{{"count", g.count},
                    {"name", g.name},
                    {"uuid", g.uuid},
                    {"pci_bus_id", g.pci_bus_id},
                    {"compute_capability", std::to_string(g.cc_major) + "." + std::to_string(g.cc_minor)},
                    {"sm_count", g.sm_count},
                    {"sm_clock_mhz_max", g.max_sm_clock_mhz},
                    {"sm_clock_mhz_during_run", run_clock},
                    {"memory_gib", std::round(g.mem_gib * 100) / 100},
                    {"memory_clock_mhz", g.mem_clock_mhz},
                    {"memory_bus_width_bits", g.mem_bus_width_bits},
                    {"memory_peak_gbps", peak_mem_gbps(g.mem_clock_mhz, g.mem_bus_width_bits)},
                    {"l2_mib", g.l2_mib},
                    {"driver", g.driver},
                    {"cuda_driver_api", version_string(g.driver_api, 1000)},
                    {"cuda_runtime", version_string(g.runtime_api, 1000)},
                    {"cublas", version_string(g.cublas, 10000)}};
    if (device == "cuda") {
      const int fpc = tensor_bf16_flops_per_clk_sm(g.cc_major, g.cc_minor);
      const double clock = run_clock > 0 ? run_clock : g.max_sm_clock_mhz;
      const char* src = run_clock > 0 ? "SM clock read (NVML) during the run" : "maximum SM clock (cudaDevAttrClockRate)";
      peak = json{{"tflops", fpc ? peak_tflops(g.sm_count, fpc, clock) : 0.0},
                  {"dtype", "bf16 dense tensor core"},
                  {"units", g.sm_count},
                  {"unit", "SM"},
                  {"flops_per_clk_per_unit", fpc},
                  {"clock_mhz", clock},
                  {"clock_source", src},
                  {"formula", fpc ? "SMs x FLOP/clk/SM (compute capability " + std::to_string(g.cc_major) + "." +
                                        std::to_string(g.cc_minor) + ") x clock"
                                  : "unknown: no FLOP/clk/SM known for compute capability " +
                                        std::to_string(g.cc_major) + "." + std::to_string(g.cc_minor) +
                                        " (no % of peak or MFU)"}};
    }
  }
#endif
  m["nccl"] = nccl;
  if (peak.is_null()) {
    const json& c = m["cpu"];
    const int cores = c["threads"].get<int>(), fpc = c["fp32_flops_per_clk_core"].get<int>();
    const double mhz = c["mhz"].get<double>();
    peak = json{{"tflops", peak_tflops(cores, fpc, mhz)},
                {"dtype", "fp32 FMA"},
                {"units", cores},
                {"unit", "core"},
                {"flops_per_clk_per_unit", fpc},
                {"clock_mhz", mhz},
                {"clock_source", "/proc/cpuinfo cpu MHz during the run"},
                {"formula", "cores (OpenMP threads) x FLOP/clk/core (" + c["isa"].get<std::string>() + ") x clock"}};
  }
  m["peak"] = peak;
  m["mfu_formula"] = kMfuFormula;
  const json& gpu = m["gpu"];
  m["label"] = device == "cuda" && !gpu.is_null()
                   ? gpu["name"].get<std::string>()
                   : m["cpu"]["model"].get<std::string>() + " x" + std::to_string(m["cpu"]["threads"].get<int>());
  return m;
}

}  // namespace lt::bench
