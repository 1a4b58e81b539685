// CUDA schedules of the 2D hash-grid encoding over the shared math in avatar/hashgrid.h (the CPU
// twin in csrc/cpu/hashgrid_cpu.cpp runs the same functions).
//   forward:        one thread per (point, plane, level); consecutive threads write consecutive
//                   F-feature slots of one output row (coalesced).
//   backward table: one thread per (point, plane, level), atomicAdd of w * g into the 4 corner rows.
//   backward input: one thread per (point, plane) summing its levels (no atomics).
#include "avatar/cuda.h"
#include "avatar/hashgrid.h"

namespace avatar {
namespace cuda {

namespace {

using hashgrid::Levels;

constexpr int THREADS = 256;

inline unsigned blocks_for(int64_t n) { return (unsigned)((n + THREADS - 1) / THREADS); }

template <int FC>
__global__ void hashgrid_fwd_kernel(int64_t N, int P, const Levels lv, const float* __restrict__ x,
                                    const float* __restrict__ tables, float* __restrict__ out) {
    const int F = FC > 0 ? FC : lv.F;
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N * P * lv.L) return;
    const int l = (int)(t % lv.L);
    const int64_t i = t / lv.L;          // point * P + plane
    const int p = (int)(i % P);
    const float u = x[2 * i], v = x[2 * i + 1];
    hashgrid::encode_level(u, v, tables + (int64_t)p * lv.T * F, lv, l, F, out + t * F);
}

template <int FC>
__global__ void hashgrid_bwd_table_kernel(int64_t N, int P, const Levels lv, const float* __restrict__ x,
                                          const float* __restrict__ grad_out, float* __restrict__ grad_tables) {
    const int F = FC > 0 ? FC : lv.F;
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N * P * lv.L) return;
    const int l = (int)(t % lv.L);
    const int64_t i = t / lv.L;
    const int p = (int)(i % P);
    const float* g = grad_out + t * F;
    bool any = false;
    for (int f = 0; f < F; ++f) any |= g[f] != 0.f;
    if (!any) return;
    const hashgrid::Corners c = hashgrid::corners(x[2 * i], x[2 * i + 1], lv, l);
    float* gt = grad_tables + (int64_t)p * lv.T * F;
    for (int k = 0; k < 4; ++k) {
        if (c.w[k] == 0.f) continue;
        float* r = gt + c.row[k] * F;
        for (int f = 0; f < F; ++f) atomicAdd(r + f, c.w[k] * g[f]);
    }
}

template <int FC>
__global__ void hashgrid_bwd_input_kernel(int64_t N, int P, const Levels lv, const float* __restrict__ x,
                                          const float* __restrict__ tables, const float* __restrict__ grad_out,
                                          float* __restrict__ grad_x) {
    const int F = FC > 0 ? FC : lv.F;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * P) return;
    const int p = (int)(i % P);
    const float u = x[2 * i], v = x[2 * i + 1];
    const float* table = tables + (int64_t)p * lv.T * F;
    const float* g = grad_out + i * lv.L * F;
    float d[2] = {0.f, 0.f};
    for (int l = 0; l < lv.L; ++l) hashgrid::level_grad_uv(u, v, table, lv, l, F, g + l * F, d);
    grad_x[2 * i] = d[0];
    grad_x[2 * i + 1] = d[1];
}

template <int FC>
void launch_forward(int64_t N, int P, const Levels& lv, const float* x, const float* tables, float* out,
                    cudaStream_t stream) {
    const int64_t n = N * P * lv.L;
    if (n == 0) return;
    hashgrid_fwd_kernel<FC><<<blocks_for(n), THREADS, 0, stream>>>(N, P, lv, x, tables, out);
}

template <int FC>
void launch_backward(int64_t N, int P, const Levels& lv, const float* x, const float* tables,
                     const float* grad_out, float* grad_tables, float* grad_x, cudaStream_t stream) {
    const int64_t n = N * P * lv.L;
    if (n == 0) return;
    hashgrid_bwd_table_kernel<FC><<<blocks_for(n), THREADS, 0, stream>>>(N, P, lv, x, grad_out, grad_tables);
    if (grad_x)
        hashgrid_bwd_input_kernel<FC><<<blocks_for(N * P), THREADS, 0, stream>>>(N, P, lv, x, tables, grad_out,
                                                                                 grad_x);
}

}  // namespace

void hashgrid_forward(int64_t N, int P, const Levels& lv, const float* x, const float* tables, float* out,
                      cudaStream_t stream) {
    switch (lv.F) {
        case 1: return launch_forward<1>(N, P, lv, x, tables, out, stream);
        case 2: return launch_forward<2>(N, P, lv, x, tables, out, stream);
        case 4: return launch_forward<4>(N, P, lv, x, tables, out, stream);
        case 8: return launch_forward<8>(N, P, lv, x, tables, out, stream);
        default: return launch_forward<0>(N, P, lv, x, tables, out, stream);
    }
}

void hashgrid_backward(int64_t N, int P, const Levels& lv, const float* x, const float* tables,
                       const float* grad_out, float* grad_tables, float* grad_x, cudaStream_t stream) {
    switch (lv.F) {
        case 1: return launch_backward<1>(N, P, lv, x, tables, grad_out, grad_tables, grad_x, stream);
        case 2: return launch_backward<2>(N, P, lv, x, tables, grad_out, grad_tables, grad_x, stream);
        case 4: return launch_backward<4>(N, P, lv, x, tables, grad_out, grad_tables, grad_x, stream);
        case 8: return launch_backward<8>(N, P, lv, x, tables, grad_out, grad_tables, grad_x, stream);
        default: return launch_backward<0>(N, P, lv, x, tables, grad_out, grad_tables, grad_x, stream);
    }
}

}  // namespace cuda
}  // namespace avatar
