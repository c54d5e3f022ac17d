# The CUDA backend's build (docs/BENCHMARKS.md "GPU", docs/INTEGRATION.md "GPU path"): the
# headers under include/kvtrim/cuda/ need nothing built; this compiles their tests and
# benchmarks with nvcc when a CUDA compiler is found. The tests are registered with CTest only
# when a GPU answers at configure time (nvidia-smi), so a machine with nvcc and no GPU (CI)
# compiles them and runs everything else as before.
include(CheckLanguage)
check_language(CUDA)
set(_kvtrim_cuda_default OFF)
if(CMAKE_CUDA_COMPILER)
  set(_kvtrim_cuda_default ${PROJECT_IS_TOP_LEVEL})
endif()
option(KVTRIM_CUDA "Build the CUDA backend's tests and benchmarks (needs nvcc)" ${_kvtrim_cuda_default})
set(KVTRIM_GTEST_SOURCE "" CACHE PATH "GoogleTest source tree, used when find_package(GTest) fails")

if(KVTRIM_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # Hopper machine code plus portable PTX (any GPU from compute capability 8.0 JIT-compiles it).
    set(CMAKE_CUDA_ARCHITECTURES "90-real;80-virtual")
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  add_library(kvtrim_cuda_flags INTERFACE)
  target_compile_features(kvtrim_cuda_flags INTERFACE cuda_std_17)
  target_compile_definitions(kvtrim_cuda_flags INTERFACE EIGEN_NO_CUDA)
  # 20012 / 554: Eigen's and view3's defaulted members under nvcc (harmless, reported as notes).
  target_compile_options(kvtrim_cuda_flags INTERFACE
    $<$<COMPILE_LANGUAGE:CUDA>:--diag-suppress=20012,554 -Xcompiler=-Wall,-Wextra
      $<$<BOOL:${KVTRIM_WERROR}>:-Xcompiler=-Werror>>)
  target_link_libraries(kvtrim_cuda_flags INTERFACE kvtrim::kvtrim CUDA::cudart)
  execute_process(COMMAND nvidia-smi -L RESULT_VARIABLE _kvtrim_smi OUTPUT_QUIET ERROR_QUIET)
  if(_kvtrim_smi EQUAL 0)
    set(KVTRIM_CUDA_HAVE_GPU ON)
  else()
    set(KVTRIM_CUDA_HAVE_GPU OFF)
    message(STATUS "kvtrim: no GPU answers nvidia-smi: CUDA tests are built, not registered with CTest")
  endif()
  add_subdirectory(${PROJECT_SOURCE_DIR}/tests/cuda ${PROJECT_BINARY_DIR}/tests/cuda)
  add_subdirectory(${PROJECT_SOURCE_DIR}/bench/cuda ${PROJECT_BINARY_DIR}/bench/cuda)
endif()
