// The portable build of the LSTM and GRU kernels: the compiler's baseline vectors (SSE2 on x86-64, NEON on arm64).
#define LJ_NS generic
#define LJ_LANES 4
#define LJ_MR 2
#include "kernel.inc"
#include "gru_kernel.inc"
