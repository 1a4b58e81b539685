// 2D multi-resolution hash-grid encoding (the lookup of HashTriplane, avatar/model/triplane.py),
// compiled by nvcc for the GPU and by the host compiler for the CPU twin. No torch headers here.
//
// Per level l (scale s_l, resolution r_l, table rows S_l, dense or hashed, rows starting at o_l of
// the plane's table [T,F]): pos = uv * s_l + 0.5, cell = floor(pos), frac = pos - cell; the four
// corners (cx, cy) = cell + (dx, dy) are looked up at row
//   dense:  (cx + cy * r_l) mod S_l          hashed: (cx ^ cy * 2654435761) mod 2^32 mod S_l
// and blended bilinearly, corners in the order (0,0) (0,1) (1,0) (1,1) like the torch reference.
// Backward: d table[row] += w * g (scatter), d uv = s_l * sum_corners <g, table[row]> * dw/dfrac.
#pragma once

#include <cmath>
#include <cstdint>

#include "avatar/common.h"

namespace avatar {
namespace hashgrid {

constexpr int MAX_LEVELS = 32;
constexpr int MAX_FEATURES = 8;
constexpr uint32_t PRIME = 2654435761u;

// Level layout of one encoding, shared by every plane (passed by value to CUDA kernels: < 1 KiB).
struct Levels {
    int L;                       // levels
    int F;                       // features per table row (<= MAX_FEATURES)
    int64_t T;                   // rows of one plane's table (>= offset[l] + size[l])
    float scale[MAX_LEVELS];     // s_l = base * per_level_scale^l - 1
    int32_t res[MAX_LEVELS];     // r_l = ceil(s_l) + 1 vertices per side
    int32_t size[MAX_LEVELS];    // S_l rows of level l
    int64_t offset[MAX_LEVELS];  // o_l first row of level l
    int32_t dense[MAX_LEVELS];   // 1: dense row index, 0: spatial hash
};

// Rounded (never fused) float ops for the cell location, so CPU and GPU pick the same cell as the
// torch reference (nvcc would contract uv * s + 0.5 into an FMA; a border point could move cells).
AVATAR_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

AVATAR_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

// Row (within level l) of grid corner (cx, cy); the modulo is non-negative like torch's `%`.
AVATAR_HD int64_t corner_row(int32_t cx, int32_t cy, const Levels& lv, int l) {
    const int64_t S = lv.size[l];
    if (lv.dense[l]) {
        int64_t i = (int64_t)cx + (int64_t)cy * (int64_t)lv.res[l];
        if ((uint64_t)i < (uint64_t)S) return i;      // the common case: no wrap
        i %= S;
        return i < 0 ? i + S : i;
    }
    const uint32_t h = (uint32_t)cx ^ ((uint32_t)cy * PRIME);
    const uint32_t S32 = (uint32_t)S;
    return (int64_t)((S32 & (S32 - 1)) == 0 ? h & (S32 - 1) : h % S32);   // hashed tables: 2^k rows
}

// The four corners of uv's cell at level l: table rows (offset included) and bilinear weights,
// plus frac for the input gradient.
struct Corners {
    int64_t row[4];
    float w[4];
    float fx, fy;
};

AVATAR_HD Corners corners(float u, float v, const Levels& lv, int l) {
    const float s = lv.scale[l];
    const float px = add_rn(mul_rn(u, s), 0.5f), py = add_rn(mul_rn(v, s), 0.5f);
    const float gx = floorf(px), gy = floorf(py);
    Corners c;
    c.fx = px - gx;
    c.fy = py - gy;
    const int32_t x0 = (int32_t)gx, y0 = (int32_t)gy;
    const float wx[2] = {1.f - c.fx, c.fx}, wy[2] = {1.f - c.fy, c.fy};
    for (int dx = 0; dx < 2; ++dx)
        for (int dy = 0; dy < 2; ++dy) {
            const int k = 2 * dx + dy;
            c.row[k] = lv.offset[l] + corner_row(x0 + dx, y0 + dy, lv, l);
            c.w[k] = wx[dx] * wy[dy];
        }
    return c;
}

// Forward of one (point, plane, level): out[F] = sum_k w_k * table[row_k].
// table: the plane's [T,F] rows. F is a compile-time constant where the caller's is.
AVATAR_HD void encode_level(float u, float v, const float* table, const Levels& lv, int l, int F, float* out) {
    const Corners c = corners(u, v, lv, l);
    const float* r[4] = {table + c.row[0] * F, table + c.row[1] * F, table + c.row[2] * F, table + c.row[3] * F};
    for (int f = 0; f < F; ++f) {   // no per-feature array: stays in registers for a runtime F too
        float acc = 0.f;
        for (int k = 0; k < 4; ++k) acc += c.w[k] * r[k][f];
        out[f] = acc;
    }
}

// Input gradient of one (point, plane, level) for output gradient g[F]: adds d out / d (u, v) to d_uv[2].
AVATAR_HD void level_grad_uv(float u, float v, const float* table, const Levels& lv, int l, int F,
                             const float* g, float* d_uv) {
    const Corners c = corners(u, v, lv, l);
    const float wx[2] = {1.f - c.fx, c.fx}, wy[2] = {1.f - c.fy, c.fy};
    float dfx = 0.f, dfy = 0.f;
    for (int dx = 0; dx < 2; ++dx)
        for (int dy = 0; dy < 2; ++dy) {
            const float* r = table + c.row[2 * dx + dy] * F;
            float dot = 0.f;
            for (int f = 0; f < F; ++f) dot += g[f] * r[f];
            dfx += dot * (dx ? 1.f : -1.f) * wy[dy];
            dfy += dot * (dy ? 1.f : -1.f) * wx[dx];
        }
    d_uv[0] += dfx * lv.scale[l];
    d_uv[1] += dfy * lv.scale[l];
}

}  // namespace hashgrid
}  // namespace avatar
