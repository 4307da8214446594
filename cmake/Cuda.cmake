# CUDA support: the hand-written kernels (kernels/cuda -> leasetrain_kernels_cuda), the GEMM
# benchmark (benchmarks/cuda -> leasetrain_bench_cuda) and their tests: `gpu` (GoogleTest on a
# device, SKIPPED without one), `cuda-compile` (PTX proves the tensor-core kernels use mma.sync)
# and `cuda-emulated` (the kernels run on a CPU emulator of the PTX they use).
# Included by the top-level CMakeLists.txt after find_package(CUDAToolkit) succeeded. Enables
# the CUDA language only when a CUDA compiler actually works; otherwise it says so and returns
# with LEASETRAIN_HAVE_CUDA OFF, and the build stays CPU-only.
include_guard(GLOBAL)
set(LEASETRAIN_HAVE_CUDA OFF)

# Let check_language find the toolkit's nvcc even when it is not on PATH.
if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND CUDAToolkit_NVCC_EXECUTABLE)
  set(ENV{CUDACXX} "${CUDAToolkit_NVCC_EXECUTABLE}")
endif()
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(STATUS "leasetrain: CUDA toolkit found but no working CUDA compiler: CUDA kernels not built")
  return()
endif()

# sm_80 machine code runs on Ampere and newer; 90a adds Hopper's own instructions for the
# wgmma/TMA path to come. Override with -DCMAKE_CUDA_ARCHITECTURES=... (e.g. "90a" alone on H100
# to halve the build). Must be set before enable_language(CUDA), which would pick a default.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES "80;90a" CACHE STRING "CUDA architectures for the kernels" FORCE)
endif()
enable_language(CUDA)
set(LEASETRAIN_HAVE_CUDA ON)
# C++20 in .cu files too (CUDA targets inherit CXX_STANDARD 20); CMake 3.25 predates nvcc 12
# and does not know its C++20 flag, so tell it.
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_EXTENSIONS OFF)
message(STATUS "leasetrain: CUDA ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")

set(LT_CUDA_DIR ${PROJECT_SOURCE_DIR}/kernels/cuda)
file(GLOB LT_CUDA_HEADERS CONFIGURE_DEPENDS ${LT_CUDA_DIR}/*.h ${LT_CUDA_DIR}/*.cuh)

# The kernels. cudart is linked statically so a binary has no libcudart dependency and, on a
# machine without a driver, cudaGetDeviceCount just fails and the caller falls back to the CPU.
# cuBLAS is only the baseline (tests, benchmarks, --gemm cublas).
add_library(leasetrain_kernels_cuda STATIC
  ${LT_CUDA_DIR}/gemm.cu ${LT_CUDA_DIR}/gemm_wgmma.cu ${LT_CUDA_DIR}/gemm_cublas.cu ${LT_CUDA_DIR}/attention.cu
  ${LT_CUDA_DIR}/attention_wgmma.cu ${LT_CUDA_DIR}/attention_wgmma_bwd.cu ${LT_CUDA_DIR}/ops.cu
  ${LT_CUDA_DIR}/attention_naive.cu)
target_link_libraries(leasetrain_kernels_cuda PUBLIC leasetrain_flags CUDA::cudart_static CUDA::cublas)
target_compile_definitions(leasetrain_kernels_cuda PUBLIC LEASETRAIN_HAVE_CUDA=1)
target_compile_options(leasetrain_kernels_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>)
# The Hopper kernels (wgmma, setmaxnreg) exist only in sm_90a code; without it gemm() never
# picks them (GemmPath::Wgmma falls back to MmaSync).
if("90a" IN_LIST CMAKE_CUDA_ARCHITECTURES OR "90a-real" IN_LIST CMAKE_CUDA_ARCHITECTURES)
  target_compile_definitions(leasetrain_kernels_cuda PRIVATE LEASETRAIN_HAVE_SM90A=1)
endif()
set_target_properties(leasetrain_kernels_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON)

# The GEMM benchmark: the same gemm()/gemm_cublas() symbols the trainer calls.
file(GLOB LT_BENCH_CUDA_SRC CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/benchmarks/cuda/*.cu)
add_library(leasetrain_bench_cuda STATIC ${LT_BENCH_CUDA_SRC})
# The suite's GPU description (device_info.cu) reads the device through the runtime's CUDA
# backend, as the trainer does.
target_link_libraries(leasetrain_bench_cuda PUBLIC leasetrain_kernels_cuda leasetrain_runtime)

if(NOT LEASETRAIN_BUILD_TESTS)
  return()
endif()
enable_testing()

# cuda-compile: PTX of the kernel sources (compute_80: mma.sync is the same on every arch built),
# then two scripts: one fails unless every named tensor-core kernel contains mma.sync, ldmatrix
# and cp.async; the other assembles the PTX with ptxas for every architecture built and fails if
# any kernel spills registers or needs a stack frame (slow, and invisible to numeric tests).
set(LT_PTX_DIR ${CMAKE_CURRENT_BINARY_DIR}/ptx)
set(LT_PTX_FILES "")
set(LT_PTX_HOST_FLAGS "")
if(CMAKE_CUDA_HOST_COMPILER)
  set(LT_PTX_HOST_FLAGS -ccbin ${CMAKE_CUDA_HOST_COMPILER})
endif()
foreach(name gemm attention ops)
  set(ptx ${LT_PTX_DIR}/${name}.compute_80.ptx)
  add_custom_command(OUTPUT ${ptx}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${LT_PTX_DIR}
    COMMAND ${CMAKE_CUDA_COMPILER} ${LT_PTX_HOST_FLAGS} -std=c++20 -O3 -arch=compute_80 -ptx
            -I${PROJECT_SOURCE_DIR} ${LT_CUDA_DIR}/${name}.cu -o ${ptx}
    DEPENDS ${LT_CUDA_DIR}/${name}.cu ${LT_CUDA_HEADERS}
    COMMENT "PTX of kernels/cuda/${name}.cu for the cuda-compile check" VERBATIM)
  list(APPEND LT_PTX_FILES ${ptx})
endforeach()
# The Hopper kernels: PTX for compute_90a (always made, whatever CMAKE_CUDA_ARCHITECTURES says, so
# the check runs on every machine with nvcc).
set(LT_PTX_90A "")
foreach(name gemm_wgmma attention_wgmma attention_wgmma_bwd)
  set(ptx ${LT_PTX_DIR}/${name}.compute_90a.ptx)
  add_custom_command(OUTPUT ${ptx}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${LT_PTX_DIR}
    COMMAND ${CMAKE_CUDA_COMPILER} ${LT_PTX_HOST_FLAGS} -std=c++20 -O3 -arch=compute_90a -ptx
            -I${PROJECT_SOURCE_DIR} ${LT_CUDA_DIR}/${name}.cu -o ${ptx}
    DEPENDS ${LT_CUDA_DIR}/${name}.cu ${LT_CUDA_HEADERS}
    COMMENT "PTX of kernels/cuda/${name}.cu (compute_90a) for the cuda-compile check" VERBATIM)
  list(APPEND LT_PTX_90A ${ptx})
endforeach()
set(LT_PTX_90A_BWD ${LT_PTX_DIR}/attention_wgmma_bwd.compute_90a.ptx)
add_custom_target(leasetrain_cuda_ptx ALL DEPENDS ${LT_PTX_FILES} ${LT_PTX_90A})
add_test(NAME cuda_ptx_hopper_uses_wgmma_and_tma
  COMMAND ${CMAKE_COMMAND} "-DPTX_FILES=${LT_PTX_DIR}/gemm_wgmma.compute_90a.ptx" "-DKERNELS=gemm_wgmma_kernel"
          "-DPATTERNS=wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16;cp.async.bulk.tensor.2d.shared::cluster.global;mbarrier.try_wait.parity;mbarrier.arrive.expect_tx;setmaxnreg.inc.sync.aligned.u32 240;setmaxnreg.dec.sync.aligned.u32 24;wgmma.fence.sync.aligned"
          -P ${PROJECT_SOURCE_DIR}/tests/cuda/check_ptx_mma.cmake)
set_tests_properties(cuda_ptx_hopper_uses_wgmma_and_tma PROPERTIES LABELS cuda-compile)
# The Hopper attention forward: S = Q K^T from shared memory (m64n128k16), O += P V with A from
# registers (m64n64k16 at head dim 64, m64n128k16 at 128), fed by TMA through mbarriers.
add_test(NAME cuda_ptx_hopper_attention_uses_wgmma_and_tma
  COMMAND ${CMAKE_COMMAND} "-DPTX_FILES=${LT_PTX_DIR}/attention_wgmma.compute_90a.ptx" "-DKERNELS=flash_fwd_wgmma_kernel"
          "-DPATTERNS=wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16;cp.async.bulk.tensor.2d.shared::cluster.global;mbarrier.try_wait.parity;mbarrier.arrive.expect_tx;setmaxnreg.inc.sync.aligned.u32 240;setmaxnreg.dec.sync.aligned.u32 24;wgmma.fence.sync.aligned;wgmma.wait_group.sync.aligned"
          -P ${PROJECT_SOURCE_DIR}/tests/cuda/check_ptx_mma.cmake)
set_tests_properties(cuda_ptx_hopper_attention_uses_wgmma_and_tma PROPERTIES LABELS cuda-compile)
# The Hopper attention backward: both kernels, both head dims, wgmma (m64n64 for S and dP, and
# m64n128 for the head-dim-128 accumulations from registers), TMA, the ring's barriers, the roles.
add_test(NAME cuda_ptx_hopper_attention_bwd_uses_wgmma_and_tma
  COMMAND ${CMAKE_COMMAND} "-DPTX_FILES=${LT_PTX_90A_BWD}"
          "-DKERNELS=attn_bwd_dq_wgmma_kernel;attn_bwd_dkdv_wgmma_kernel"
          "-DPATTERNS=wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16;cp.async.bulk.tensor.2d.shared::cluster.global;mbarrier.try_wait.parity;mbarrier.arrive.expect_tx;setmaxnreg.inc.sync.aligned.u32 232;setmaxnreg.dec.sync.aligned.u32 40;wgmma.fence.sync.aligned;wgmma.wait_group.sync.aligned"
          -P ${PROJECT_SOURCE_DIR}/tests/cuda/check_ptx_mma.cmake)
add_test(NAME cuda_ptx_hopper_attention_bwd_hd128_uses_m64n128
  COMMAND ${CMAKE_COMMAND} "-DPTX_FILES=${LT_PTX_90A_BWD}"
          "-DKERNELS=attn_bwd_dq_wgmma_kernelILi128E;attn_bwd_dkdv_wgmma_kernelILi128E"
          "-DPATTERNS=wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16"
          -P ${PROJECT_SOURCE_DIR}/tests/cuda/check_ptx_mma.cmake)
set_tests_properties(cuda_ptx_hopper_attention_bwd_uses_wgmma_and_tma cuda_ptx_hopper_attention_bwd_hd128_uses_m64n128
  PROPERTIES LABELS cuda-compile)
add_test(NAME cuda_ptx_uses_mma_sync
  COMMAND ${CMAKE_COMMAND} "-DPTX_FILES=${LT_PTX_FILES}"
          "-DKERNELS=gemm_mma_kernel;flash_fwd_kernel;flash_bwd_dq_kernel;flash_bwd_dkdv_kernel"
          "-DPATTERNS=mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32;ldmatrix.sync.aligned.m8n8.x4;cp.async.cg.shared.global"
          -P ${PROJECT_SOURCE_DIR}/tests/cuda/check_ptx_mma.cmake)
set_tests_properties(cuda_ptx_uses_mma_sync PROPERTIES LABELS cuda-compile)
find_program(LT_PTXAS ptxas HINTS ${CUDAToolkit_BIN_DIR} NO_CACHE)
if(LT_PTXAS)
  add_test(NAME cuda_kernels_do_not_spill
    COMMAND ${CMAKE_COMMAND} -DPTXAS=${LT_PTXAS} "-DPTX_FILES=${LT_PTX_FILES}" "-DARCHS=${CMAKE_CUDA_ARCHITECTURES}"
            -P ${PROJECT_SOURCE_DIR}/tests/cuda/check_ptxas_resources.cmake)
  # The Hopper kernels on sm_90a (they assemble for nothing else); also fails when ptxas ignores
  # setmaxnreg (warning C7508), which would leave the consumers without their registers, or
  # serialises wgmma (a register of an in-flight group touched: slow, and invisible to numeric tests).
  add_test(NAME cuda_hopper_kernels_do_not_spill
    COMMAND ${CMAKE_COMMAND} -DPTXAS=${LT_PTXAS} "-DPTX_FILES=${LT_PTX_90A}" "-DARCHS=90a"
            -P ${PROJECT_SOURCE_DIR}/tests/cuda/check_ptxas_resources.cmake)
  set_tests_properties(cuda_hopper_kernels_do_not_spill PROPERTIES LABELS cuda-compile)
  # ... and it can fail: a fixture kernel that touches an in-flight accumulator must be reported.
  set(ser_ptx ${LT_PTX_DIR}/wgmma_serialized.compute_90a.ptx)
  add_custom_command(OUTPUT ${ser_ptx}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${LT_PTX_DIR}
    COMMAND ${CMAKE_CUDA_COMPILER} ${LT_PTX_HOST_FLAGS} -std=c++20 -O3 -arch=compute_90a -ptx -I${PROJECT_SOURCE_DIR}
            ${PROJECT_SOURCE_DIR}/tests/cuda/fixtures/wgmma_serialized.cu -o ${ser_ptx}
    DEPENDS ${PROJECT_SOURCE_DIR}/tests/cuda/fixtures/wgmma_serialized.cu ${LT_CUDA_HEADERS} VERBATIM)
  add_custom_target(leasetrain_cuda_ptx_fixture_wgmma ALL DEPENDS ${ser_ptx})
  add_test(NAME cuda_hopper_check_catches_serialised_wgmma
    COMMAND ${CMAKE_COMMAND} -DPTXAS=${LT_PTXAS} -DPTX_FILES=${ser_ptx} -DARCHS=90a
            -P ${PROJECT_SOURCE_DIR}/tests/cuda/check_ptxas_resources.cmake)
  set_tests_properties(cuda_hopper_check_catches_serialised_wgmma PROPERTIES LABELS cuda-compile
    PASS_REGULAR_EXPRESSION "ptxas serialised wgmma.*wgmma_serialized_kernel")
  # The check can fail: a fixture kernel that needs local memory must be reported.
  set(lm_ptx ${LT_PTX_DIR}/local_memory.compute_80.ptx)
  add_custom_command(OUTPUT ${lm_ptx}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${LT_PTX_DIR}
    COMMAND ${CMAKE_CUDA_COMPILER} ${LT_PTX_HOST_FLAGS} -O3 -arch=compute_80 -ptx
            ${PROJECT_SOURCE_DIR}/tests/cuda/fixtures/local_memory.cu -o ${lm_ptx}
    DEPENDS ${PROJECT_SOURCE_DIR}/tests/cuda/fixtures/local_memory.cu VERBATIM)
  add_custom_target(leasetrain_cuda_ptx_fixture ALL DEPENDS ${lm_ptx})
  add_test(NAME cuda_kernels_spill_check_catches_local_memory
    COMMAND ${CMAKE_COMMAND} -DPTXAS=${LT_PTXAS} -DPTX_FILES=${lm_ptx} -DARCHS=80
            -P ${PROJECT_SOURCE_DIR}/tests/cuda/check_ptxas_resources.cmake)
  set_tests_properties(cuda_kernels_do_not_spill PROPERTIES LABELS cuda-compile)
  set_tests_properties(cuda_kernels_spill_check_catches_local_memory PROPERTIES LABELS cuda-compile
    PASS_REGULAR_EXPRESSION "FAILED, kernels use local memory.*local_memory_kernel.*256 B stack")
else()
  message(STATUS "leasetrain: no ptxas next to nvcc: the register-spill check is not run")
endif()

find_package(GTest REQUIRED)
include(GoogleTest)

# gpu: every kernel against the CPU reference on a device. Without one each test prints
# "[  SKIPPED ]" and CTest reports it as skipped, not passed.
add_executable(test_kernels_gpu ${PROJECT_SOURCE_DIR}/tests/cuda/test_kernels_gpu.cu)
target_link_libraries(test_kernels_gpu PRIVATE leasetrain_kernels_cuda leasetrain_kernels_cpu GTest::gtest)
gtest_discover_tests(test_kernels_gpu
  PROPERTIES LABELS gpu SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" DISCOVERY_TIMEOUT 60)

# gpu: the whole model on the CUDA backend against the CPU backend (one step: loss, gradients,
# clipping, AdamW; bf16 and fp32; flash and fallback attention; mma.sync and cuBLAS GEMMs) and a
# 50-step run whose loss falls. Plain C++ over the runtime.
add_executable(test_model_gpu ${PROJECT_SOURCE_DIR}/tests/cuda/test_model_gpu.cpp)
target_link_libraries(test_model_gpu PRIVATE leasetrain_runtime GTest::gtest_main)
gtest_discover_tests(test_model_gpu
  PROPERTIES LABELS gpu SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" DISCOVERY_TIMEOUT 60
             ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")

# The CLI's device choice: DeviceCli (label cpu) checks the one-line fallback to the CPU where no
# device is usable; DeviceCliGpu (label gpu) trains, resumes and evaluates through the CLI on one.
add_executable(test_device_cli ${PROJECT_SOURCE_DIR}/tests/cuda/test_device_cli.cpp)
target_link_libraries(test_device_cli PRIVATE leasetrain_launcher GTest::gtest_main)
target_compile_definitions(test_device_cli PRIVATE LT_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
  LT_CLI="$<TARGET_FILE:leasetrain>")
add_dependencies(test_device_cli leasetrain)
gtest_discover_tests(test_device_cli TEST_FILTER "DeviceCli.*"
  PROPERTIES LABELS cpu SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" DISCOVERY_TIMEOUT 60
             ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
gtest_discover_tests(test_device_cli TEST_FILTER "DeviceCliGpu.*"
  PROPERTIES LABELS gpu SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" DISCOVERY_TIMEOUT 60 TIMEOUT 600)

# cuda-emulated: the same test file and the same kernel sources compiled as C++ against
# tests/cuda/emulator.h (host threads, PTX fragment semantics), so CI without a GPU still runs
# the kernels' index math, pipelines and barriers. tests/cuda/emulate.cmake rewrites the launch
# syntax (and copies the test file to a .cpp). Every CUDA thread is an OS thread, so this is
# slow: LT_EMULATED trims the test's shape lists, and the cuBLAS tests are left out.
option(LEASETRAIN_CUDA_EMULATED_TESTS "Run the CUDA kernels on the CPU emulator in CTest" ON)
if(LEASETRAIN_CUDA_EMULATED_TESTS)
  set(LT_EMU_DIR ${CMAKE_CURRENT_BINARY_DIR}/emulated)
  set(LT_EMU_SRC "")
  foreach(src ${LT_CUDA_DIR}/gemm.cu ${LT_CUDA_DIR}/gemm_wgmma.cu ${LT_CUDA_DIR}/attention.cu
              ${LT_CUDA_DIR}/attention_wgmma.cu ${LT_CUDA_DIR}/attention_wgmma_bwd.cu ${LT_CUDA_DIR}/ops.cu
              ${LT_CUDA_DIR}/attention_naive.cu ${PROJECT_SOURCE_DIR}/tests/cuda/test_kernels_gpu.cu)
    get_filename_component(name ${src} NAME_WE)
    set(out ${LT_EMU_DIR}/${name}.cpp)
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -DIN=${src} -DOUT=${out} -P ${PROJECT_SOURCE_DIR}/tests/cuda/emulate.cmake
      DEPENDS ${src} ${PROJECT_SOURCE_DIR}/tests/cuda/emulate.cmake
      COMMENT "Rewriting ${name}.cu for the CPU emulator" VERBATIM)
    list(APPEND LT_EMU_SRC ${out})
  endforeach()
  # What every emulated binary shares: the emulator force-included ahead of each source, and
  # the kernels (with the emulator's stubs) compiled once for all of them.
  add_library(leasetrain_emulated INTERFACE)
  target_include_directories(leasetrain_emulated INTERFACE ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(leasetrain_emulated INTERFACE
    -include ${PROJECT_SOURCE_DIR}/tests/cuda/emulator.h -fno-strict-aliasing -Wno-unknown-pragmas
    -Wno-unused-variable -Wno-unused-but-set-variable -Wno-unused-function)
  target_compile_definitions(leasetrain_emulated INTERFACE LT_EMULATED=1)
  target_link_libraries(leasetrain_emulated INTERFACE leasetrain_flags leasetrain_kernels_cpu Threads::Threads)
  set(LT_EMU_KERNELS "")
  foreach(name gemm gemm_wgmma attention attention_wgmma attention_wgmma_bwd ops attention_naive)
    list(APPEND LT_EMU_KERNELS ${LT_EMU_DIR}/${name}.cpp)
  endforeach()
  add_library(leasetrain_emulated_kernels OBJECT ${LT_EMU_KERNELS} ${PROJECT_SOURCE_DIR}/tests/cuda/emulator_stubs.cpp)
  target_link_libraries(leasetrain_emulated_kernels PUBLIC leasetrain_emulated)

  add_executable(test_kernels_emulated ${LT_EMU_DIR}/test_kernels_gpu.cpp)
  target_link_libraries(test_kernels_emulated PRIVATE leasetrain_emulated_kernels GTest::gtest)
  gtest_discover_tests(test_kernels_emulated
    TEST_PREFIX "emulated."
    TEST_FILTER "-*Cublas*"
    PROPERTIES LABELS cuda-emulated SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT 900
               DISCOVERY_TIMEOUT 60)

  # The Hopper instructions (tests/cuda/emulator_hopper.h: mbarrier, TMA, wgmma, setmaxnreg) against
  # references built from the PTX ISA, and the kernel bugs they must catch (death tests).
  add_executable(test_hopper_emulated ${PROJECT_SOURCE_DIR}/tests/cuda/test_hopper_emulator.cpp)
  target_link_libraries(test_hopper_emulated PRIVATE leasetrain_emulated GTest::gtest_main)
  gtest_discover_tests(test_hopper_emulated
    TEST_PREFIX "emulated."
    PROPERTIES LABELS cuda-emulated SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT 300
               DISCOVERY_TIMEOUT 60)

  # The CUDA backend itself on the emulator: tests/cuda/test_model_gpu.cpp with the runtime's
  # tensors (CUDA buffers become host memory), the backend's host code and the kernels all
  # compiled against the emulator, the CPU backend as the reference (LT_EMULATED: small shapes).
  set(LT_RT ${PROJECT_SOURCE_DIR}/runtime)
  add_executable(test_model_emulated
    ${LT_RT}/tensor.cpp ${LT_RT}/backend.cpp ${LT_RT}/cuda_backend.cpp ${LT_RT}/cpu_backend.cpp ${LT_RT}/model.cpp
    ${LT_RT}/optim.cpp ${LT_RT}/safetensors.cpp ${LT_RT}/input.cpp ${LT_RT}/memory.cpp
    ${PROJECT_SOURCE_DIR}/tests/cuda/test_model_gpu.cpp)
  target_compile_definitions(test_model_emulated PRIVATE LEASETRAIN_HAVE_CUDA=1)
  target_link_libraries(test_model_emulated PRIVATE leasetrain_emulated_kernels nlohmann_json::nlohmann_json
    tomlplusplus::tomlplusplus GTest::gtest_main)
  gtest_discover_tests(test_model_emulated
    TEST_PREFIX "emulated."
    PROPERTIES LABELS cuda-emulated SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT 900
               DISCOVERY_TIMEOUT 60 ENVIRONMENT "OMP_NUM_THREADS=1;OPENBLAS_NUM_THREADS=1")
  # The NCCL path on the emulator: NcclComm, the data-parallel layer and the trainer on --device
  # cuda, with tests/cuda/fake_nccl.cpp standing in for libnccl (NCCL's calls over MPI). The
  # whole runtime is compiled against the emulator here; tests/CMakeLists.txt runs the binary
  # under mpirun -np 2.
  if(MPI_CXX_FOUND AND NCCL_FOUND)
    file(GLOB LT_EMU_RUNTIME_SRC CONFIGURE_DEPENDS ${LT_RT}/*.cpp)
    add_executable(test_nccl_emulated ${LT_EMU_RUNTIME_SRC} ${PROJECT_SOURCE_DIR}/tests/cuda/fake_nccl.cpp
      ${PROJECT_SOURCE_DIR}/benchmarks/bench_allreduce.cpp ${PROJECT_SOURCE_DIR}/benchmarks/bench_allreduce_nccl.cpp
      ${PROJECT_SOURCE_DIR}/tests/cuda/test_nccl_emulated.cpp ${PROJECT_SOURCE_DIR}/tests/mpi/mpi_main.cpp)
    target_include_directories(test_nccl_emulated PRIVATE ${NCCL_INCLUDE_DIR})
    target_compile_definitions(test_nccl_emulated PRIVATE LEASETRAIN_HAVE_CUDA=1 LEASETRAIN_HAVE_NCCL=1
      LEASETRAIN_HAVE_MPI=1 LT_CLI="$<TARGET_FILE:leasetrain>")
    target_link_libraries(test_nccl_emulated PRIVATE leasetrain_emulated_kernels nlohmann_json::nlohmann_json
      tomlplusplus::tomlplusplus OpenSSL::Crypto PkgConfig::PCRE2 GTest::gtest MPI::MPI_CXX)
  endif()
endif()
