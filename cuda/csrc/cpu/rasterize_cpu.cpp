// CPU twin of the CUDA rasterizer: the per-Gaussian and per-pixel math comes from the same
// __host__ __device__ headers (cuda/include/avatar/*.h); here it is scheduled with OpenMP.
#include <algorithm>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "avatar/common.h"
#include "avatar/cpu.h"
#include "avatar/project.h"
#include "avatar/raster.h"
#include "avatar/sh.h"

namespace avatar {
namespace cpu {

static int num_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// A tile's splats copied contiguously (the tile's 256 pixels all walk this list).
struct PackedSplat {
    float mx, my, conic[3], opacity;
    float sigma_cut;    // sigma above which alpha < 1/255 for sure: skip without expf
    int32_t n;
};

static void pack_tile(const int32_t* ids, int32_t s, int32_t e, const float* m2, const float* con,
                      const float* op, std::vector<PackedSplat>& out) {
    out.resize(e - s);
    for (int32_t j = s; j < e; ++j) {
        const int32_t n = ids[j];
        PackedSplat& p = out[j - s];
        p.mx = m2[2 * n];
        p.my = m2[2 * n + 1];
        p.conic[0] = con[3 * n];
        p.conic[1] = con[3 * n + 1];
        p.conic[2] = con[3 * n + 2];
        p.opacity = op[n];
        p.sigma_cut = splat_sigma_cutoff(op[n]);
        p.n = n;
    }
}

void project_forward(const Geometry& g, const float* means, const float* quats, const float* scales,
                     const float* opacities, const float* viewmats, const float* Ks, float* means2d,
                     float* conics, float* depths, int32_t* radii, float* opac_out) {
    const int64_t total = (int64_t)g.B * g.C * g.N;
    ProjectSettings st{g.near_plane, g.far_plane, g.eps2d, g.antialiased};
#pragma omp parallel for schedule(static)
    for (int64_t idx = 0; idx < total; ++idx) {
        int64_t n = idx % g.N, bc = idx / g.N, b = bc / g.C;
        Camera cam = make_camera(viewmats + 16 * bc, Ks + 9 * bc, g.width, g.height);
        int64_t gi = b * g.N + n;
        Projected out;
        ::avatar::project_forward(means + 3 * gi, quats + 4 * gi, scales + 3 * gi, opacities[gi], cam, st, out);
        means2d[2 * idx] = out.mean2d[0];
        means2d[2 * idx + 1] = out.mean2d[1];
        for (int k = 0; k < 3; ++k) conics[3 * idx + k] = out.conic[k];
        depths[idx] = out.depth;
        radii[idx] = out.radius;
        opac_out[idx] = out.opacity;
    }
}

void project_backward(const Geometry& g, const float* means, const float* quats, const float* scales,
                      const float* opacities, const float* viewmats, const float* Ks,
                      const float* v_means2d, const float* v_conics, const float* v_depths,
                      const float* v_opac_out, float* v_means, float* v_quats, float* v_scales,
                      float* v_opacities) {
    const int64_t total = (int64_t)g.B * g.N;
    ProjectSettings st{g.near_plane, g.far_plane, g.eps2d, g.antialiased};
#pragma omp parallel for schedule(static)
    for (int64_t gi = 0; gi < total; ++gi) {
        int64_t b = gi / g.N, n = gi % g.N;
        float vm[3] = {0, 0, 0}, vq[4] = {0, 0, 0, 0}, vs[3] = {0, 0, 0}, vo = 0.f;
        for (int c = 0; c < g.C; ++c) {
            int64_t bc = b * g.C + c, idx = bc * g.N + n;
            Camera cam = make_camera(viewmats + 16 * bc, Ks + 9 * bc, g.width, g.height);
            ::avatar::project_backward(means + 3 * gi, quats + 4 * gi, scales + 3 * gi, opacities[gi], cam, st,
                             v_means2d + 2 * idx, v_conics + 3 * idx, v_depths[idx], v_opac_out[idx],
                             vm, vq, vs, &vo);
        }
        for (int k = 0; k < 3; ++k) v_means[3 * gi + k] = vm[k];
        for (int k = 0; k < 4; ++k) v_quats[4 * gi + k] = vq[k];
        for (int k = 0; k < 3; ++k) v_scales[3 * gi + k] = vs[k];
        v_opacities[gi] = vo;
    }
}

void sh_forward(int B, int C, int N, int K, int degree, const float* coeffs, const float* means,
                const float* viewmats, float* colors) {
    const int64_t total = (int64_t)B * C * N;
#pragma omp parallel for schedule(static)
    for (int64_t idx = 0; idx < total; ++idx) {
        int64_t n = idx % N, bc = idx / N, b = bc / C;
        int64_t gi = b * N + n;
        float campos[3], dir[3];
        camera_center(viewmats + 16 * bc, campos);
        sh_direction(means + 3 * gi, campos, dir);
        ::avatar::sh_forward(degree, coeffs + (int64_t)K * 3 * gi, dir, colors + 3 * idx);
    }
}

void sh_backward(int B, int C, int N, int K, int degree, const float* coeffs, const float* means,
                 const float* viewmats, const float* v_colors, float* v_coeffs, float* v_means) {
    const int64_t total = (int64_t)B * N;
#pragma omp parallel for schedule(static)
    for (int64_t gi = 0; gi < total; ++gi) {
        int64_t b = gi / N, n = gi % N;
        float* vc = v_coeffs + (int64_t)K * 3 * gi;
        for (int k = 0; k < 3 * K; ++k) vc[k] = 0.f;
        float vm[3] = {0, 0, 0};
        for (int c = 0; c < C; ++c) {
            int64_t bc = b * C + c, idx = bc * N + n;
            float campos[3];
            camera_center(viewmats + 16 * bc, campos);
            ::avatar::sh_backward(degree, coeffs + (int64_t)K * 3 * gi, means + 3 * gi, campos, v_colors + 3 * idx,
                        vc, vm);
        }
        for (int k = 0; k < 3; ++k) v_means[3 * gi + k] = vm[k];
    }
}

// Bin the splats of one image into tiles: offsets [T+1] (relative to `base`), ids sorted by
// (tile, depth, index) -- the order a global (tile, depth) key sort would give.
static void bin_image(int N, int tiles_x, int tiles_y, const float* means2d, const int32_t* radii,
                      const float* depths, int32_t* offsets, std::vector<int32_t>& ids) {
    const int T = tiles_x * tiles_y;
    std::vector<int32_t> count(T + 1, 0);
    for (int n = 0; n < N; ++n) {
        if (radii[n] <= 0) continue;
        int tx0, tx1, ty0, ty1;
        tile_bounds(means2d[2 * n], means2d[2 * n + 1], radii[n], tiles_x, tiles_y, &tx0, &tx1, &ty0, &ty1);
        for (int ty = ty0; ty < ty1; ++ty)
            for (int tx = tx0; tx < tx1; ++tx) count[ty * tiles_x + tx]++;
    }
    const int32_t base = (int32_t)ids.size();
    std::vector<int32_t> start(T + 1, 0);
    for (int t = 0; t < T; ++t) start[t + 1] = start[t] + count[t];
    ids.resize(base + start[T]);
    std::vector<int32_t> fill(start.begin(), start.end() - 1);
    for (int n = 0; n < N; ++n) {
        if (radii[n] <= 0) continue;
        int tx0, tx1, ty0, ty1;
        tile_bounds(means2d[2 * n], means2d[2 * n + 1], radii[n], tiles_x, tiles_y, &tx0, &tx1, &ty0, &ty1);
        for (int ty = ty0; ty < ty1; ++ty)
            for (int tx = tx0; tx < tx1; ++tx) ids[base + fill[ty * tiles_x + tx]++] = n;
    }
    int32_t* data = ids.data() + base;
#pragma omp parallel for schedule(dynamic, 4)
    for (int t = 0; t < T; ++t) {
        std::sort(data + start[t], data + start[t + 1], [depths](int32_t a, int32_t b) {
            return depths[a] < depths[b] || (depths[a] == depths[b] && a < b);
        });
    }
    for (int t = 0; t <= T; ++t) offsets[t] = base + start[t];
}

void raster_forward(int I, int N, int D, int width, int height, const float* means2d,
                    const float* conics, const float* features, const float* opacities,
                    const int32_t* radii, const float* depths, std::vector<int32_t>& tile_offsets,
                    std::vector<int32_t>& tile_ids, float* render, float* alphas, int32_t* last) {
    const int tiles_x = (width + TILE - 1) / TILE, tiles_y = (height + TILE - 1) / TILE;
    const int T = tiles_x * tiles_y;
    tile_offsets.assign((size_t)I * T + 1, 0);
    tile_ids.clear();
    const int64_t HW = (int64_t)width * height;
    for (int i = 0; i < I; ++i) {
        const int64_t gofs = (int64_t)i * N;
        bin_image(N, tiles_x, tiles_y, means2d + 2 * gofs, radii + gofs, depths + gofs,
                  tile_offsets.data() + (size_t)i * T, tile_ids);
        const int32_t* ids = tile_ids.data();
        const int32_t* offs = tile_offsets.data() + (size_t)i * T;
        const float* m2 = means2d + 2 * gofs;
        const float* con = conics + 3 * gofs;
        const float* feat = features + (int64_t)D * gofs;
        const float* op = opacities + gofs;
        float* img = render + (int64_t)i * HW * D;
#pragma omp parallel
        {
            std::vector<float> acc(D);
            std::vector<PackedSplat> pk;
#pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < T; ++t) {
                const int tx = t % tiles_x, ty = t / tiles_x;
                const int32_t s = offs[t], e = offs[t + 1];
                pack_tile(ids, s, e, m2, con, op, pk);
                const int32_t cnt = e - s;
                for (int py = ty * TILE; py < std::min(height, (ty + 1) * TILE); ++py) {
                    for (int px = tx * TILE; px < std::min(width, (tx + 1) * TILE); ++px) {
                        const float fx = (float)px + 0.5f, fy = (float)py + 0.5f;
                        float Tr = 1.f;
                        int32_t consumed = 0;
                        std::fill(acc.begin(), acc.end(), 0.f);
                        for (int32_t j = 0; j < cnt; ++j) {
                            const PackedSplat& p = pk[j];
                            const float dx = p.mx - fx, dy = p.my - fy;
                            const float sigma = splat_sigma(p.conic, dx, dy);
                            if (sigma > p.sigma_cut) continue;
                            float alpha, raw;
                            if (!splat_alpha(p.opacity, sigma, &alpha, &raw)) continue;
                            const float next_T = Tr * (1.f - alpha);
                            if (next_T <= T_MIN) break;
                            const float w = alpha * Tr;
                            const float* f = feat + (int64_t)D * p.n;
                            for (int d = 0; d < D; ++d) acc[d] += w * f[d];
                            Tr = next_T;
                            consumed = j + 1;
                        }
                        const int64_t pix = (int64_t)py * width + px;
                        for (int d = 0; d < D; ++d) img[pix * D + d] = acc[d];
                        alphas[(int64_t)i * HW + pix] = 1.f - Tr;
                        last[(int64_t)i * HW + pix] = consumed;
                    }
                }
            }
        }
    }
}

void raster_backward(int I, int N, int D, int width, int height, const float* means2d,
                     const float* conics, const float* features, const float* opacities,
                     const int32_t* tile_offsets, const int32_t* tile_ids, const float* alphas,
                     const int32_t* last, const float* v_render, const float* v_alphas,
                     float* v_means2d, float* v_conics, float* v_features, float* v_opacities) {
    const int tiles_x = (width + TILE - 1) / TILE, tiles_y = (height + TILE - 1) / TILE;
    const int T = tiles_x * tiles_y;
    const int64_t HW = (int64_t)width * height;
    const int stride = 2 + 3 + 1 + D;           // per-Gaussian gradient record in thread buffers
    const int nthreads = num_threads();
    std::vector<float> buf((size_t)nthreads * N * stride);
    for (int i = 0; i < I; ++i) {
        const int64_t gofs = (int64_t)i * N;
        const int32_t* offs = tile_offsets + (size_t)i * T;
        const float* m2 = means2d + 2 * gofs;
        const float* con = conics + 3 * gofs;
        const float* feat = features + (int64_t)D * gofs;
        const float* op = opacities + gofs;
        const float* vimg = v_render + (int64_t)i * HW * D;
        std::fill(buf.begin(), buf.end(), 0.f);
#pragma omp parallel num_threads(nthreads)
        {
            float* mine = buf.data() + (size_t)thread_id() * N * stride;
            std::vector<float> S(D);
            std::vector<PackedSplat> pk;
#pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < T; ++t) {
                const int tx = t % tiles_x, ty = t / tiles_x;
                const int32_t s = offs[t];
                pack_tile(tile_ids, s, offs[t + 1], m2, con, op, pk);
                for (int py = ty * TILE; py < std::min(height, (ty + 1) * TILE); ++py) {
                    for (int px = tx * TILE; px < std::min(width, (tx + 1) * TILE); ++px) {
                        const int64_t pix = (int64_t)py * width + px;
                        const int32_t cnt = last[(int64_t)i * HW + pix];
                        if (cnt == 0) continue;
                        const float fx = (float)px + 0.5f, fy = (float)py + 0.5f;
                        const float T_final = 1.f - alphas[(int64_t)i * HW + pix];
                        const float* vC = vimg + pix * D;
                        const float vA = v_alphas[(int64_t)i * HW + pix];
                        // C = sum_i f_i a_i T_i, A = 1 - prod(1 - a_i); walk back to front:
                        // dC/da_i = f_i T_i - S_i / (1 - a_i), S_i = sum_{j>i} f_j a_j T_j,
                        // dA/da_i = T_final / (1 - a_i).
                        float Tr = T_final;
                        std::fill(S.begin(), S.end(), 0.f);
                        for (int32_t j = cnt - 1; j >= 0; --j) {
                            const PackedSplat& p = pk[j];
                            const int32_t n = p.n;
                            const float dx = p.mx - fx, dy = p.my - fy;
                            const float sigma = splat_sigma(p.conic, dx, dy);
                            if (sigma > p.sigma_cut) continue;
                            float alpha, raw;
                            if (!splat_alpha(p.opacity, sigma, &alpha, &raw)) continue;
                            const float om = 1.f - alpha;
                            Tr = Tr / om;                 // transmittance in front of splat n
                            const float w = alpha * Tr;
                            const float* f = feat + (int64_t)D * n;
                            float* r = mine + (size_t)n * stride;
                            float v_alpha = vA * T_final / om;
                            for (int d = 0; d < D; ++d) {
                                v_alpha += vC[d] * (f[d] * Tr - S[d] / om);
                                r[6 + d] += w * vC[d];
                                S[d] += f[d] * w;
                            }
                            splat_alpha_backward(p.opacity, p.conic, dx, dy, sigma, raw, alpha, v_alpha,
                                                 r, r + 2, r + 5);
                        }
                    }
                }
            }
        }
        // reduce the thread buffers
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; ++n) {
            float rec[64];
            float* tmp = stride <= 64 ? rec : nullptr;
            std::vector<float> big;
            if (!tmp) { big.resize(stride); tmp = big.data(); }
            for (int k = 0; k < stride; ++k) tmp[k] = 0.f;
            for (int th = 0; th < nthreads; ++th) {
                const float* r = buf.data() + ((size_t)th * N + n) * stride;
                for (int k = 0; k < stride; ++k) tmp[k] += r[k];
            }
            const int64_t gi = gofs + n;
            v_means2d[2 * gi] = tmp[0];
            v_means2d[2 * gi + 1] = tmp[1];
            for (int k = 0; k < 3; ++k) v_conics[3 * gi + k] = tmp[2 + k];
            v_opacities[gi] = tmp[5];
            for (int d = 0; d < D; ++d) v_features[(int64_t)D * gi + d] = tmp[6 + d];
        }
    }
}

}  // namespace cpu
}  // namespace avatar
