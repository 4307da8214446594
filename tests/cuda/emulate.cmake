# Rewrites one kernels/cuda/*.cu file into C++ for the CPU emulator (tests/cuda/emulator.h):
# `kernel<<<grid, block, smem, stream>>>(args)` becomes `::emu::Launcher(kernel, grid, block,
# smem, stream)(args)` and the dynamic shared-memory declaration becomes a pointer into the
# emulated block's shared memory. Everything else is compiled as written.
#   cmake -DIN=kernels/cuda/gemm.cu -DOUT=build/emulated/gemm.cpp -P emulate.cmake
cmake_minimum_required(VERSION 3.25)
if(NOT IN OR NOT OUT)
  message(FATAL_ERROR "emulate.cmake: set IN and OUT")
endif()
file(READ "${IN}" text)
string(REGEX REPLACE "extern __shared__ __align__\\([0-9]+\\) unsigned char ([A-Za-z_0-9]+)\\[\\];"
       "unsigned char* \\1 = ::emu::dyn_smem();" text "${text}")
# One launch per line; the configuration may hold template arguments (kFwdSmem<D>) but no ';'.
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_:]*(<[^<>;()\n]*>)?)[ ]*<<<([^;\n]*)>>>[ ]*\\("
       "::emu::Launcher(\\1, \\3)(" text "${text}")
string(FIND "${text}" "<<<" left)
if(NOT left EQUAL -1)
  message(FATAL_ERROR "emulate.cmake: a kernel launch in ${IN} was not rewritten")
endif()
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${text}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
