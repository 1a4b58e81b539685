// Shared definitions for the rasterizer math compiled twice: by nvcc for the GPU and by the host
// compiler for the CPU twin. No torch headers here or in anything that includes this.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define AVATAR_HD __host__ __device__ __forceinline__
#else
#define AVATAR_HD inline
#endif

namespace avatar {

constexpr int TILE = 16;                    // tile edge in pixels
constexpr float ALPHA_MIN = 1.f / 255.f;     // skip contributions below one 8-bit step
constexpr float ALPHA_MAX = 0.99f;           // clamp so (1 - alpha) stays invertible in backward
constexpr float T_MIN = 1e-4f;               // stop before transmittance would drop to <= T_MIN

// Sizes and projection settings of one rasterize call, as the CPU and CUDA entry points take them.
// B batch, C cameras per batch entry, N Gaussians per batch entry.
struct Geometry {
    int B, C, N, width, height;
    float near_plane, far_plane, eps2d;
    bool antialiased;
};

AVATAR_HD int tiles_along(int pixels) { return (pixels + TILE - 1) / TILE; }

// 3x3 matrices are row-major float[9].
AVATAR_HD void mat3_mul(const float* A, const float* B, float* out) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            out[3 * i + j] = A[3 * i] * B[j] + A[3 * i + 1] * B[3 + j] + A[3 * i + 2] * B[6 + j];
}

// out = A * B^T
AVATAR_HD void mat3_mul_bt(const float* A, const float* B, float* out) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            out[3 * i + j] = A[3 * i] * B[3 * j] + A[3 * i + 1] * B[3 * j + 1] + A[3 * i + 2] * B[3 * j + 2];
}

// out = A^T * B
AVATAR_HD void mat3_mul_at(const float* A, const float* B, float* out) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            out[3 * i + j] = A[i] * B[j] + A[3 + i] * B[3 + j] + A[6 + i] * B[6 + j];
}

AVATAR_HD float clampf(float v, float lo, float hi) { return fminf(fmaxf(v, lo), hi); }

}  // namespace avatar
