// GPU description, device copy bandwidth and the bitwise-repeat check (see device_info.h).
#include <cublas_v2.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "benchmarks/cuda/bench_util.cuh"
#include "benchmarks/cuda/device_info.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm.h"
#include "runtime/cuda_backend.h"

namespace lt::bench {
namespace {

// The few NVML entry points used, opened at run time: libnvidia-ml.so.1 ships with the driver,
// not the toolkit, and linking it would stop the binary from starting on a machine without one.
struct Nvml {
  using Device = void*;
  int (*init)() = nullptr;
  int (*by_pci)(const char*, Device*) = nullptr;
  int (*clock)(Device, int, unsigned*) = nullptr;  // nvmlDeviceGetClockInfo
  int (*uuid)(Device, char*, unsigned) = nullptr;
  int (*driver)(char*, unsigned) = nullptr;
  bool ok = false;
  static constexpr int kClockSm = 1;  // NVML_CLOCK_SM

  Nvml() {
    void* h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) return;
    init = reinterpret_cast<int (*)()>(dlsym(h, "nvmlInit_v2"));
    by_pci = reinterpret_cast<int (*)(const char*, Device*)>(dlsym(h, "nvmlDeviceGetHandleByPciBusId_v2"));
    clock = reinterpret_cast<int (*)(Device, int, unsigned*)>(dlsym(h, "nvmlDeviceGetClockInfo"));
    uuid = reinterpret_cast<int (*)(Device, char*, unsigned)>(dlsym(h, "nvmlDeviceGetUUID"));
    driver = reinterpret_cast<int (*)(char*, unsigned)>(dlsym(h, "nvmlSystemGetDriverVersion"));
    ok = init && by_pci && clock && uuid && driver && init() == 0;
  }
  Device handle(int device) const {
    char pci[32] = {0};
    Device d = nullptr;
    if (!ok || cudaDeviceGetPCIBusId(pci, sizeof pci, device) != cudaSuccess || by_pci(pci, &d) != 0) return nullptr;
    return d;
  }
};

const Nvml& nvml() {
  static Nvml n;
  return n;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

GpuInfo query_gpu(int device) {
  GpuInfo g;
  if (!cuda_available(&g.why)) return g;  // count 0, and why (no driver, no device, ...)
  g.count = cuda_device_count();
  g.device = device;
  const CudaDeviceInfo d = cuda_device_info(device);  // what the trainer checks against the lease
  g.name = d.name;
  g.uuid = d.uuid;
  g.cc_major = d.cc_major;
  g.cc_minor = d.cc_minor;
  g.sm_count = d.sm_count;
  g.mem_gib = d.memory_bytes / double(1ull << 30);
  g.l2_mib = d.l2_bytes / double(1 << 20);
  g.driver_api = d.driver_version;
  g.runtime_api = d.runtime_version;
  int khz = 0;
  cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device);
  g.max_sm_clock_mhz = khz / 1000.0;
  cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, device);
  g.mem_clock_mhz = khz / 1000.0;
  cudaDeviceGetAttribute(&g.mem_bus_width_bits, cudaDevAttrGlobalMemoryBusWidth, device);
  char pci[32] = {0};
  if (cudaDeviceGetPCIBusId(pci, sizeof pci, device) == cudaSuccess) g.pci_bus_id = pci;
  int major = 0, minor = 0, patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &major) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(MINOR_VERSION, &minor) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(PATCH_LEVEL, &patch) == CUBLAS_STATUS_SUCCESS)
    g.cublas = major * 10000 + minor * 100 + patch;
  char buf[96] = {0};
  if (nvml().ok && nvml().driver(buf, sizeof buf) == 0) g.driver = buf;
  return g;
}

void use_device(int device) { CUDA_CHECK(cudaSetDevice(device)); }

double read_sm_clock_mhz(int device) {
  const Nvml& n = nvml();
  Nvml::Device d = n.handle(device);
  unsigned mhz = 0;
  if (!d || n.clock(d, Nvml::kClockSm, &mhz) != 0) return 0;
  return mhz;
}

CopyBench bench_device_copy(int device, size_t bytes, int warmup, int iters) {
  CUDA_CHECK(cudaSetDevice(device));
  CopyBench r;
  r.bytes = (double)bytes;
  DeviceMem src(bytes), dst(bytes);
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int64_t n = (int64_t)(bytes / sizeof(lt::cuda::bf16));
  fill_randn(src.as<lt::cuda::bf16>(), n, 7, s);
  CUDA_CHECK(cudaMemsetAsync(dst.p, 0, bytes, s));
  // Correctness first: one copy, then compare a sample of both ends and the middle on the host.
  CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  {
    const size_t probe = std::min<size_t>(bytes, 1 << 20);
    std::vector<char> a(probe), b(probe);
    r.correct = true;
    for (size_t off : {size_t(0), (bytes - probe) / 2, bytes - probe}) {
      CUDA_CHECK(cudaMemcpy(a.data(), (char*)src.p + off, probe, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(b.data(), (char*)dst.p + off, probe, cudaMemcpyDeviceToHost));
      r.correct = r.correct && std::memcmp(a.data(), b.data(), probe) == 0;
    }
  }
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<double> ms;
  for (int i = 0; i < warmup + iters; i++) {
    CUDA_CHECK(cudaEventRecord(e0, s));
    CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaEventRecord(e1, s));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    if (i >= warmup) ms.push_back(t);
  }
  r.sm_clock_mhz = read_sm_clock_mhz(device);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
  r.median_ms = median(ms);
  r.min_ms = *std::min_element(ms.begin(), ms.end());
  r.max_ms = *std::max_element(ms.begin(), ms.end());
  r.gbps = 2.0 * bytes / (r.median_ms * 1e-3) / 1e9;
  return r;
}

bool gemm_repeats_bitwise(int device, int n, std::string* what) {
  CUDA_CHECK(cudaSetDevice(device));
  const size_t elems = (size_t)n * n, bytes = elems * sizeof(lt::cuda::bf16);
  DeviceMem a(bytes), b(bytes), c1(bytes), c2(bytes);
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  fill_randn(a.as<lt::cuda::bf16>(), (int64_t)elems, 11, s);
  fill_randn(b.as<lt::cuda::bf16>(), (int64_t)elems, 12, s);
  lt::cuda::GemmArgs g;
  g.layout = lt::cuda::Layout::NT;
  g.M = g.N = g.K = n;
  g.A = a.p;
  g.B = b.p;
  g.C = c1.p;
  const lt::cuda::GemmPath path = lt::cuda::gemm(g, s);
  g.C = c2.p;
  lt::cuda::gemm(g, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<char> h1(bytes), h2(bytes);
  CUDA_CHECK(cudaMemcpy(h1.data(), c1.p, bytes, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(h2.data(), c2.p, bytes, cudaMemcpyDeviceToHost));
  cudaStreamDestroy(s);
  if (what)
    *what = "bf16 GEMM " + std::to_string(n) + "^3 (" + lt::cuda::to_string(path) + ") twice on the same inputs";
  return std::memcmp(h1.data(), h2.data(), bytes) == 0;
}

}  // namespace lt::bench
