// CPU (OpenMP) schedules of the 2D hash-grid encoding; the math is avatar/hashgrid.h, shared with
// csrc/cuda/hashgrid.cu. Backward is deterministic: every (plane, level) table range is accumulated
// by a single thread in point order (levels and planes own disjoint rows), and the input gradient
// by one thread per (point, plane), so no atomics and no dependence on the thread count.
#include <omp.h>

#include <cstring>

#include "avatar/cpu.h"
#include "avatar/hashgrid.h"

namespace avatar {
namespace cpu {

namespace {

using hashgrid::Levels;

// F as a compile-time constant for the common sizes (unrolled feature loops), runtime otherwise.
template <int FC>
void forward_impl(int64_t N, int P, const Levels& lv, const float* x, const float* tables, float* out) {
    const int F = FC > 0 ? FC : lv.F, L = lv.L;
    const int64_t NP = N * P;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < NP; ++i) {
        const int p = (int)(i % P);
        const float u = x[2 * i], v = x[2 * i + 1];
        const float* table = tables + (int64_t)p * lv.T * F;
        float* o = out + i * L * F;
        for (int l = 0; l < L; ++l) hashgrid::encode_level(u, v, table, lv, l, F, o + l * F);
    }
}

template <int FC>
void backward_impl(int64_t N, int P, const Levels& lv, const float* x, const float* tables,
                   const float* grad_out, float* grad_tables, float* grad_x) {
    const int F = FC > 0 ? FC : lv.F, L = lv.L;
    const int64_t LF = (int64_t)L * F;
    std::memset(grad_tables, 0, sizeof(float) * (size_t)(P * lv.T * F));
    // table gradients: one task per (plane, level), points in order
    const int tasks = P * L;
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < tasks; ++t) {
        const int p = t / L, l = t % L;
        float* gt = grad_tables + (int64_t)p * lv.T * F;
        for (int64_t n = 0; n < N; ++n) {
            const int64_t i = n * P + p;
            const float* g = grad_out + i * LF + l * F;
            const hashgrid::Corners c = hashgrid::corners(x[2 * i], x[2 * i + 1], lv, l);
            for (int k = 0; k < 4; ++k) {
                float* r = gt + c.row[k] * F;
                for (int f = 0; f < F; ++f) r[f] += c.w[k] * g[f];
            }
        }
    }
    if (!grad_x) return;
    const int64_t NP = N * P;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < NP; ++i) {
        const int p = (int)(i % P);
        const float* table = tables + (int64_t)p * lv.T * F;
        float d[2] = {0.f, 0.f};
        for (int l = 0; l < L; ++l)
            hashgrid::level_grad_uv(x[2 * i], x[2 * i + 1], table, lv, l, F, grad_out + i * LF + l * F, d);
        grad_x[2 * i] = d[0];
        grad_x[2 * i + 1] = d[1];
    }
}

}  // namespace

void hashgrid_forward(int64_t N, int P, const Levels& lv, const float* x, const float* tables, float* out) {
    switch (lv.F) {
        case 1: return forward_impl<1>(N, P, lv, x, tables, out);
        case 2: return forward_impl<2>(N, P, lv, x, tables, out);
        case 4: return forward_impl<4>(N, P, lv, x, tables, out);
        case 8: return forward_impl<8>(N, P, lv, x, tables, out);
        default: return forward_impl<0>(N, P, lv, x, tables, out);
    }
}

void hashgrid_backward(int64_t N, int P, const Levels& lv, const float* x, const float* tables,
                       const float* grad_out, float* grad_tables, float* grad_x) {
    switch (lv.F) {
        case 1: return backward_impl<1>(N, P, lv, x, tables, grad_out, grad_tables, grad_x);
        case 2: return backward_impl<2>(N, P, lv, x, tables, grad_out, grad_tables, grad_x);
        case 4: return backward_impl<4>(N, P, lv, x, tables, grad_out, grad_tables, grad_x);
        case 8: return backward_impl<8>(N, P, lv, x, tables, grad_out, grad_tables, grad_x);
        default: return backward_impl<0>(N, P, lv, x, tables, grad_out, grad_tables, grad_x);
    }
}

}  // namespace cpu
}  // namespace avatar
