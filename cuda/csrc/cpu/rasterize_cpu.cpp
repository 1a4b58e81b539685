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

// A tile's splats copied contiguously, with the pixel box outside which the splat is skipped at
// every pixel (sigma > sigma_cut there, so alpha < 1/255): lets the tile loops visit only the
// pixels a splat can touch, in splat-major order, without changing any per-pixel result.
struct PackedSplat {
    float mx, my, conic[3], opacity;
    float sigma_cut;    // sigma above which alpha < 1/255 for sure: skip without expf
    int32_t n;
    int32_t x0, x1, y0, y1;   // inclusive pixel box (image coordinates), may be empty
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
        // sigma = 0.5 d^T Q d <= cut  =>  |dx| <= sqrt(2 cut (Q^-1)_xx), |dy| <= sqrt(2 cut (Q^-1)_yy)
        const double A = p.conic[0], B = p.conic[1], C = p.conic[2];
        const double det = A * C - B * B;
        if (p.sigma_cut < 0.f) {
            p.x0 = p.y0 = 1;
            p.x1 = p.y1 = 0;
        } else if (det > 0.0 && A > 0.0 && C > 0.0) {
            const double hx = std::sqrt(2.0 * p.sigma_cut * C / det) * 1.001 + 1.0;
            const double hy = std::sqrt(2.0 * p.sigma_cut * A / det) * 1.001 + 1.0;
            // pixel x has its centre at x + 0.5
            p.x0 = (int32_t)std::max(-1.0, std::floor(p.mx - hx - 0.5));
            p.x1 = (int32_t)std::min(2e9, std::ceil(p.mx + hx - 0.5));
            p.y0 = (int32_t)std::max(-1.0, std::floor(p.my - hy - 0.5));
            p.y1 = (int32_t)std::min(2e9, std::ceil(p.my + hy - 0.5));
        } else {   // numerically degenerate conic: no box, test every pixel
            p.x0 = p.y0 = -1;
            p.x1 = p.y1 = 2000000000;
        }
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
        radii[2 * idx] = out.radius[0];
        radii[2 * idx + 1] = out.radius[1];
        opac_out[idx] = out.opacity;
    }
}

// Sums per-thread [n_cam x 12] camera-gradient records (v_R row-major, v_t) into v_viewmats [n_cam,4,4].
static void reduce_camera_grads(const std::vector<float>& tl, int nthreads, int64_t n_cam, float* v_viewmats) {
    for (int64_t bc = 0; bc < n_cam; ++bc) {
        float acc[12] = {0};
        for (int th = 0; th < nthreads; ++th)
            for (int k = 0; k < 12; ++k) acc[k] += tl[((size_t)th * n_cam + bc) * 12 + k];
        float* out = v_viewmats + 16 * bc;
        for (int i = 0; i < 3; ++i) {
            for (int j = 0; j < 3; ++j) out[4 * i + j] = acc[3 * i + j];
            out[4 * i + 3] = acc[9 + i];
        }
        for (int j = 0; j < 4; ++j) out[12 + j] = 0.f;
    }
}

void project_backward(const Geometry& g, const float* means, const float* quats, const float* scales,
                      const float* opacities, const float* viewmats, const float* Ks,
                      const float* v_means2d, const float* v_conics, const float* v_depths,
                      const float* v_opac_out, float* v_means, float* v_quats, float* v_scales,
                      float* v_opacities, float* v_viewmats) {
    const int64_t total = (int64_t)g.B * g.N;
    const int64_t n_cam = (int64_t)g.B * g.C;
    ProjectSettings st{g.near_plane, g.far_plane, g.eps2d, g.antialiased};
    const int nthreads = num_threads();
    const bool cam_grad = v_viewmats != nullptr;
    std::vector<float> tl(cam_grad ? (size_t)nthreads * n_cam * 12 : 0, 0.f);
#pragma omp parallel num_threads(nthreads)
    {
        float* cam_acc = cam_grad ? tl.data() + (size_t)thread_id() * n_cam * 12 : nullptr;
#pragma omp for schedule(static)
        for (int64_t gi = 0; gi < total; ++gi) {
            int64_t b = gi / g.N, n = gi % g.N;
            float vm[3] = {0, 0, 0}, vq[4] = {0, 0, 0, 0}, vs[3] = {0, 0, 0}, vo = 0.f;
            for (int c = 0; c < g.C; ++c) {
                int64_t bc = b * g.C + c, idx = bc * g.N + n;
                Camera cam = make_camera(viewmats + 16 * bc, Ks + 9 * bc, g.width, g.height);
                float* vc = cam_grad ? cam_acc + 12 * bc : nullptr;
                ::avatar::project_backward(means + 3 * gi, quats + 4 * gi, scales + 3 * gi, opacities[gi], cam, st,
                                           v_means2d + 2 * idx, v_conics + 3 * idx, v_depths[idx], v_opac_out[idx],
                                           vm, vq, vs, &vo, vc, cam_grad ? vc + 9 : nullptr);
            }
            for (int k = 0; k < 3; ++k) v_means[3 * gi + k] = vm[k];
            for (int k = 0; k < 4; ++k) v_quats[4 * gi + k] = vq[k];
            for (int k = 0; k < 3; ++k) v_scales[3 * gi + k] = vs[k];
            v_opacities[gi] = vo;
        }
    }
    if (cam_grad) reduce_camera_grads(tl, nthreads, n_cam, v_viewmats);
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
                 const float* viewmats, const float* v_colors, float* v_coeffs, float* v_means,
                 float* v_viewmats) {
    const int64_t total = (int64_t)B * N;
    const int64_t n_cam = (int64_t)B * C;
    const int nthreads = num_threads();
    const bool cam_grad = v_viewmats != nullptr;
    std::vector<float> tl(cam_grad ? (size_t)nthreads * n_cam * 12 : 0, 0.f);
#pragma omp parallel num_threads(nthreads)
    {
        float* cam_acc = cam_grad ? tl.data() + (size_t)thread_id() * n_cam * 12 : nullptr;
#pragma omp for schedule(static)
        for (int64_t gi = 0; gi < total; ++gi) {
            int64_t b = gi / N, n = gi % N;
            float* vc = v_coeffs + (int64_t)K * 3 * gi;
            for (int k = 0; k < 3 * K; ++k) vc[k] = 0.f;
            float vm[3] = {0, 0, 0};
            for (int c = 0; c < C; ++c) {
                int64_t bc = b * C + c, idx = bc * N + n;
                float campos[3], v_campos[3] = {0.f, 0.f, 0.f};
                camera_center(viewmats + 16 * bc, campos);
                ::avatar::sh_backward(degree, coeffs + (int64_t)K * 3 * gi, means + 3 * gi, campos,
                                      v_colors + 3 * idx, vc, vm, cam_grad ? v_campos : nullptr);
                if (cam_grad)
                    camera_center_backward(viewmats + 16 * bc, v_campos, cam_acc + 12 * bc, cam_acc + 12 * bc + 9);
            }
            for (int k = 0; k < 3; ++k) v_means[3 * gi + k] = vm[k];
        }
    }
    if (cam_grad) reduce_camera_grads(tl, nthreads, n_cam, v_viewmats);
}

// Bin the splats of one image into tiles: offsets [T+1] (relative to `base`), ids sorted by
// (tile, depth, index) -- the order a global (tile, depth) key sort would give.
static void bin_image(int N, int tiles_x, int tiles_y, const float* means2d, const int32_t* radii,
                      const float* depths, int32_t* offsets, std::vector<int32_t>& ids) {
    const int T = tiles_x * tiles_y;
    std::vector<int32_t> count(T + 1, 0);
    for (int n = 0; n < N; ++n) {
        if (radii[2 * n] <= 0) continue;
        int tx0, tx1, ty0, ty1;
        tile_bounds(means2d[2 * n], means2d[2 * n + 1], radii + 2 * n, tiles_x, tiles_y, &tx0, &tx1, &ty0, &ty1);
        for (int ty = ty0; ty < ty1; ++ty)
            for (int tx = tx0; tx < tx1; ++tx) count[ty * tiles_x + tx]++;
    }
    const int32_t base = (int32_t)ids.size();
    std::vector<int32_t> start(T + 1, 0);
    for (int t = 0; t < T; ++t) start[t + 1] = start[t] + count[t];
    ids.resize(base + start[T]);
    std::vector<int32_t> fill(start.begin(), start.end() - 1);
    for (int n = 0; n < N; ++n) {
        if (radii[2 * n] <= 0) continue;
        int tx0, tx1, ty0, ty1;
        tile_bounds(means2d[2 * n], means2d[2 * n + 1], radii + 2 * n, tiles_x, tiles_y, &tx0, &tx1, &ty0, &ty1);
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
        bin_image(N, tiles_x, tiles_y, means2d + 2 * gofs, radii + 2 * gofs, depths + gofs,
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
            std::vector<PackedSplat> pk;
            std::vector<float> acc(TILE * TILE * D), Tr(TILE * TILE);
            std::vector<int32_t> consumed(TILE * TILE);
            std::vector<uint8_t> alive(TILE * TILE);
#pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < T; ++t) {
                const int tx = t % tiles_x, ty = t / tiles_x;
                const int X0 = tx * TILE, Y0 = ty * TILE;
                const int tw = std::min(TILE, width - X0), th = std::min(TILE, height - Y0);
                const int32_t s = offs[t], e = offs[t + 1];
                pack_tile(ids, s, e, m2, con, op, pk);
                std::fill(acc.begin(), acc.end(), 0.f);
                std::fill(Tr.begin(), Tr.end(), 1.f);
                std::fill(consumed.begin(), consumed.end(), 0);
                std::fill(alive.begin(), alive.end(), 1);
                int n_alive = tw * th;
                // splat-major, each pixel still sees the splats front to back: identical to the
                // per-pixel loop "for splat in order: skip / stop / blend"
                for (int32_t j = 0; j < e - s && n_alive > 0; ++j) {
                    const PackedSplat& p = pk[j];
                    const int c0 = std::max(p.x0 - X0, 0), c1 = std::min(p.x1 - X0, tw - 1);
                    const int r0 = std::max(p.y0 - Y0, 0), r1 = std::min(p.y1 - Y0, th - 1);
                    const float* f = feat + (int64_t)D * p.n;
                    for (int r = r0; r <= r1; ++r) {
                        const float fy = (float)(Y0 + r) + 0.5f;
                        for (int c = c0; c <= c1; ++c) {
                            const int q = r * TILE + c;
                            if (!alive[q]) continue;
                            const float fx = (float)(X0 + c) + 0.5f;
                            const float dx = p.mx - fx, dy = p.my - fy;
                            const float sigma = splat_sigma(p.conic, dx, dy);
                            if (sigma > p.sigma_cut) continue;
                            float alpha, raw;
                            if (!splat_alpha(p.opacity, sigma, &alpha, &raw)) continue;
                            const float next_T = Tr[q] * (1.f - alpha);
                            if (next_T <= T_MIN) {       // this pixel is done; the splat is not blended
                                alive[q] = 0;
                                --n_alive;
                                continue;
                            }
                            const float w = alpha * Tr[q];
                            float* a = acc.data() + (size_t)q * D;
                            for (int d = 0; d < D; ++d) a[d] += w * f[d];
                            Tr[q] = next_T;
                            consumed[q] = j + 1;
                        }
                    }
                }
                for (int r = 0; r < th; ++r)
                    for (int c = 0; c < tw; ++c) {
                        const int q = r * TILE + c;
                        const int64_t pix = (int64_t)(Y0 + r) * width + (X0 + c);
                        for (int d = 0; d < D; ++d) img[pix * D + d] = acc[(size_t)q * D + d];
                        alphas[(int64_t)i * HW + pix] = 1.f - Tr[q];
                        last[(int64_t)i * HW + pix] = consumed[q];
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
            std::vector<PackedSplat> pk;
            std::vector<float> S(TILE * TILE * D), Tr(TILE * TILE), Tfin(TILE * TILE), vA(TILE * TILE);
            std::vector<int32_t> lastq(TILE * TILE);
            std::vector<float> g(stride);
#pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < T; ++t) {
                const int tx = t % tiles_x, ty = t / tiles_x;
                const int X0 = tx * TILE, Y0 = ty * TILE;
                const int tw = std::min(TILE, width - X0), th = std::min(TILE, height - Y0);
                const int32_t s = offs[t];
                int32_t max_last = 0;
                for (int r = 0; r < th; ++r)
                    for (int c = 0; c < tw; ++c) {
                        const int q = r * TILE + c;
                        const int64_t pix = (int64_t)i * HW + (int64_t)(Y0 + r) * width + (X0 + c);
                        lastq[q] = last[pix];
                        Tfin[q] = 1.f - alphas[pix];
                        Tr[q] = Tfin[q];
                        vA[q] = v_alphas[pix];
                        max_last = std::max(max_last, lastq[q]);
                    }
                if (max_last == 0) continue;
                pack_tile(tile_ids, s, s + max_last, m2, con, op, pk);
                std::fill(S.begin(), S.end(), 0.f);
                // C = sum_i f_i a_i T_i, A = 1 - prod(1 - a_i); per pixel, back to front:
                // dC/da_i = f_i T_i - S_i / (1 - a_i), S_i = sum_{j>i} f_j a_j T_j,
                // dA/da_i = T_final / (1 - a_i).
                for (int32_t j = max_last - 1; j >= 0; --j) {
                    const PackedSplat& p = pk[j];
                    const int c0 = std::max(p.x0 - X0, 0), c1 = std::min(p.x1 - X0, tw - 1);
                    const int r0 = std::max(p.y0 - Y0, 0), r1 = std::min(p.y1 - Y0, th - 1);
                    if (c0 > c1 || r0 > r1) continue;
                    const float* f = feat + (int64_t)D * p.n;
                    std::fill(g.begin(), g.end(), 0.f);
                    bool touched = false;
                    for (int r = r0; r <= r1; ++r) {
                        const float fy = (float)(Y0 + r) + 0.5f;
                        for (int c = c0; c <= c1; ++c) {
                            const int q = r * TILE + c;
                            if (j >= lastq[q]) continue;
                            const float fx = (float)(X0 + c) + 0.5f;
                            const float dx = p.mx - fx, dy = p.my - fy;
                            const float sigma = splat_sigma(p.conic, dx, dy);
                            if (sigma > p.sigma_cut) continue;
                            float alpha, raw;
                            if (!splat_alpha(p.opacity, sigma, &alpha, &raw)) continue;
                            touched = true;
                            const float om = 1.f - alpha;
                            Tr[q] = Tr[q] / om;                  // transmittance in front of the splat
                            const float w = alpha * Tr[q];
                            const float* vC = vimg + ((int64_t)(Y0 + r) * width + (X0 + c)) * D;
                            float* Sq = S.data() + (size_t)q * D;
                            float v_alpha = vA[q] * Tfin[q] / om;
                            for (int d = 0; d < D; ++d) {
                                v_alpha += vC[d] * (f[d] * Tr[q] - Sq[d] / om);
                                g[6 + d] += w * vC[d];
                                Sq[d] += f[d] * w;
                            }
                            splat_alpha_backward(p.opacity, p.conic, dx, dy, sigma, raw, alpha, v_alpha,
                                                 g.data(), g.data() + 2, g.data() + 5);
                        }
                    }
                    if (touched) {
                        float* rec = mine + (size_t)p.n * stride;
                        for (int k = 0; k < stride; ++k) rec[k] += g[k];
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
