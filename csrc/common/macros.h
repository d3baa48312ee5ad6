// Portability macros shared by the C++ CPU kernels, the CUDA kernels and the SIMT host
// harness. Everything under csrc/common/ must compile three ways: as host C++ (g++), as CUDA
// device code (nvcc), and as host C++ inside the harness, which defines the CUDA keywords
// itself. So no header here includes torch or CUDA runtime headers.
#pragma once

#if defined(__CUDACC__) || defined(ATTNFAST_SIMT_HARNESS)
#define ATTNFAST_HD __host__ __device__
#define ATTNFAST_DEVICE __device__
#else
#define ATTNFAST_HD
#define ATTNFAST_DEVICE
#endif

#if defined(__CUDACC__) || defined(ATTNFAST_SIMT_HARNESS)
#define ATTNFAST_INLINE __forceinline__
#elif defined(__GNUC__)
#define ATTNFAST_INLINE inline __attribute__((always_inline))
#else
#define ATTNFAST_INLINE inline
#endif

// True while nvcc compiles device code for a real GPU (not the host pass, not the harness).
#if defined(__CUDA_ARCH__)
#define ATTNFAST_ON_GPU 1
#else
#define ATTNFAST_ON_GPU 0
#endif

// Loop unrolling hint understood by nvcc (and ignored quietly by host compilers).
#if defined(__CUDACC__)
#define ATTNFAST_UNROLL _Pragma("unroll")
#else
#define ATTNFAST_UNROLL
#endif
