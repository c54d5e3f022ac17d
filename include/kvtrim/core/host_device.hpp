#pragma once
// KVTRIM_HD marks functions usable from CUDA kernels as well as host code (the views' accessors,
// the device-side apportion): __host__ __device__ under nvcc, nothing elsewhere.
#if !defined(KVTRIM_HD)
#if defined(__CUDACC__)
#define KVTRIM_HD __host__ __device__
#else
#define KVTRIM_HD
#endif
#endif
