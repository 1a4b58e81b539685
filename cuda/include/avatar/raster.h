// Per-pixel Gaussian evaluation and front-to-back compositing rules (3DGS, Kerbl et al. 2023),
// shared by the CPU and CUDA builds.
#pragma once

#include "avatar/common.h"

namespace avatar {

// Half-open tile ranges [tx0, tx1) x [ty0, ty1) covered by a splat's box of half-widths
// radius = (rx, ry) pixels (see project.h: the box where its alpha can reach 1/255).
AVATAR_HD void tile_bounds(float mx, float my, const int32_t* radius, int tiles_x, int tiles_y, int* tx0,
                           int* tx1, int* ty0, int* ty1) {
    const float rx = (float)radius[0], ry = (float)radius[1];
    *tx0 = (int)clampf(floorf((mx - rx) / (float)TILE), 0.f, (float)tiles_x);
    *tx1 = (int)clampf(ceilf((mx + rx) / (float)TILE), 0.f, (float)tiles_x);
    *ty0 = (int)clampf(floorf((my - ry) / (float)TILE), 0.f, (float)tiles_y);
    *ty1 = (int)clampf(ceilf((my + ry) / (float)TILE), 0.f, (float)tiles_y);
}

// Mahalanobis half-distance of pixel centre (px, py) from the splat: 0.5 (A dx^2 + C dy^2) + B dx dy.
AVATAR_HD float splat_sigma(const float* conic, float dx, float dy) {
    return 0.5f * (conic[0] * dx * dx + conic[2] * dy * dy) + conic[1] * dx * dy;
}

// A sigma beyond which o exp(-sigma) < 1/255 for certain (log(255 o) plus a margin far above expf's
// rounding error), so callers may skip the exact test below without changing any result.
AVATAR_HD float splat_sigma_cutoff(float opacity) {
    return opacity > 0.f ? logf(opacity * 255.f) + 1e-3f : -1.f;
}

// alpha = min(0.99, o exp(-sigma)); returns false when the splat is skipped at this pixel
// (sigma < 0 or alpha < 1/255). *raw gets o exp(-sigma) before the clamp.
AVATAR_HD bool splat_alpha(float opacity, float sigma, float* alpha, float* raw) {
    float v = opacity * expf(-sigma);
    *raw = v;
    *alpha = fminf(ALPHA_MAX, v);
    return sigma >= 0.f && *alpha >= ALPHA_MIN;
}

// Gradient of one splat's alpha at one pixel w.r.t. mean2d, conic and opacity, given v_alpha.
// Accumulates (+=).
AVATAR_HD void splat_alpha_backward(float opacity, const float* conic, float dx, float dy, float sigma,
                                    float raw, float alpha, float v_alpha, float* v_mean2d,
                                    float* v_conic, float* v_opacity) {
    if (raw > ALPHA_MAX) return;               // clamped: no gradient
    float g = expf(-sigma);
    *v_opacity += v_alpha * g;
    float v_sigma = -v_alpha * alpha;
    v_conic[0] += 0.5f * dx * dx * v_sigma;
    v_conic[1] += dx * dy * v_sigma;
    v_conic[2] += 0.5f * dy * dy * v_sigma;
    // dx = mx - px, dy = my - py
    v_mean2d[0] += (conic[0] * dx + conic[1] * dy) * v_sigma;
    v_mean2d[1] += (conic[2] * dy + conic[1] * dx) * v_sigma;
}

}  // namespace avatar
