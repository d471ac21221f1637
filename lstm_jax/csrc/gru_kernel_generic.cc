// The portable build of the GRU kernels: the compiler's baseline vectors (SSE2 on x86-64, NEON on arm64).
#define LJ_NS gru_generic
#define LJ_LANES 4
#define LJ_MR 2
#include "gru_kernel.inc"
