# The `cuda-compile` resource check: assembles the PTX of the hot kernels with ptxas for every
# architecture the build targets and fails if any kernel entry spills registers to local memory
# or needs a stack frame. A spill costs a round trip through L1/L2 inside the GEMM or attention
# inner loop: the kernel stays correct (so no numeric test sees it) but gets much slower. This
# catches it on a machine without a GPU. Prints each kernel's registers, per architecture.
#
#   cmake -DPTXAS=/path/ptxas -DPTX_FILES="a.ptx;b.ptx" -DARCHS="80;90a" -P check_ptxas_resources.cmake
cmake_minimum_required(VERSION 3.25)
if(NOT PTXAS OR NOT PTX_FILES OR NOT ARCHS)
  message(FATAL_ERROR "check_ptxas_resources: set PTXAS, PTX_FILES and ARCHS")
endif()

set(failures "")
set(n_entries 0)
foreach(arch IN LISTS ARCHS)
  # CMAKE_CUDA_ARCHITECTURES entries may carry -real / -virtual; a -virtual one has no SASS.
  if(arch MATCHES "-virtual$")
    continue()
  endif()
  string(REGEX REPLACE "-real$" "" arch "${arch}")
  foreach(ptx IN LISTS PTX_FILES)
    if(NOT EXISTS "${ptx}")
      message(FATAL_ERROR "check_ptxas_resources: ${ptx} does not exist (was the PTX target built?)")
    endif()
    get_filename_component(ptx_name "${ptx}" NAME)
    set(cubin "${CMAKE_CURRENT_BINARY_DIR}/resources.${ptx_name}.sm_${arch}.cubin")
    execute_process(
      COMMAND "${PTXAS}" -arch=sm_${arch} -O3 -v "${ptx}" -o "${cubin}"
      RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    file(REMOVE "${cubin}")
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "check_ptxas_resources: ptxas -arch=sm_${arch} ${ptx_name} failed:\n${err}")
    endif()
    # ptxas -v writes, per entry:
    #   ptxas info    : Compiling entry function '<name>' for 'sm_80'
    #   ptxas info    : Function properties for <name>
    #       <S> bytes stack frame, <SS> bytes spill stores, <SL> bytes spill loads
    #   ptxas info    : Used <R> registers, ...
    string(REPLACE "\n" ";" lines "${out}${err}")
    set(entry "")
    foreach(line IN LISTS lines)
      if(line MATCHES "Compiling entry function '([^']+)'")
        set(entry "${CMAKE_MATCH_1}")
        math(EXPR n_entries "${n_entries} + 1")
      elseif(entry AND line MATCHES "([0-9]+) bytes stack frame, ([0-9]+) bytes spill stores, ([0-9]+) bytes spill loads")
        if(NOT CMAKE_MATCH_1 EQUAL 0 OR NOT CMAKE_MATCH_2 EQUAL 0 OR NOT CMAKE_MATCH_3 EQUAL 0)
          list(APPEND failures
               "sm_${arch} ${entry}: ${CMAKE_MATCH_1} B stack, ${CMAKE_MATCH_2} B spill stores, ${CMAKE_MATCH_3} B spill loads")
        endif()
      elseif(line MATCHES "C7508|setmaxnreg.*ignored|ignor.*setmaxnreg")
        list(APPEND failures "sm_${arch} ${ptx_name}: ptxas ignored setmaxnreg: ${line}")
      elseif(line MATCHES "wgmma.*serializ|Potential Performance Loss|C7517|C7519|warpgroup\\.(arrive|wait) is injected")
        # ptxas serialises wgmma when a kernel touches registers of a group still in flight: the
        # results stay right, the pipelining is gone, and no numeric test can see it.
        list(APPEND failures "sm_${arch} ${ptx_name}: ptxas serialised wgmma: ${line}")
      elseif(entry AND line MATCHES "Used ([0-9]+) registers")
        message(STATUS "sm_${arch} ${CMAKE_MATCH_1} registers  ${entry}")
        set(entry "")
      endif()
    endforeach()
    # Warp-specialised kernels move registers between warpgroup roles with setmaxnreg: report
    # the budgets each role asks for (the figure above is the launch-time allocation).
    file(READ "${ptx}" ptx_text)
    string(REGEX MATCHALL "setmaxnreg\\.(inc|dec)\\.sync\\.aligned\\.u32 [0-9]+" roles "${ptx_text}")
    if(roles)
      list(REMOVE_DUPLICATES roles)
      string(REPLACE ";" ", " roles "${roles}")
      message(STATUS "sm_${arch} ${ptx_name}: warpgroup register budgets: ${roles}")
    endif()
  endforeach()
endforeach()

if(n_entries EQUAL 0)
  message(FATAL_ERROR "check_ptxas_resources: ptxas reported no kernel entries (output format changed?)")
endif()
if(failures)
  string(REPLACE ";" "\n  " failures "${failures}")
  message(FATAL_ERROR "check_ptxas_resources: FAILED, kernels use local memory (${n_entries} entries)\n  ${failures}")
endif()
message(STATUS "check_ptxas_resources: ok, no spills or stack in ${n_entries} entries")
