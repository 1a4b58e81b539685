// Per-Gaussian projection and SH kernels: thin CUDA schedules over the shared math in
// cuda/include/avatar/{project,sh}.h (the CPU twin runs the same functions).
#include "avatar/cuda.h"
#include "avatar/project.h"
#include "avatar/sh.h"

namespace avatar {
namespace cuda {

namespace {

constexpr int THREADS = 256;

inline unsigned blocks_for(int64_t n) { return (unsigned)((n + THREADS - 1) / THREADS); }

// Adds a [12] camera-gradient record (v_R row-major, v_t) into v_viewmat [4,4].
__device__ void add_camera_grad(const float* rec, float* v_viewmat) {
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j)
            if (rec[3 * i + j] != 0.f) atomicAdd(v_viewmat + 4 * i + j, rec[3 * i + j]);
        if (rec[9 + i] != 0.f) atomicAdd(v_viewmat + 4 * i + 3, rec[9 + i]);
    }
}

__global__ void project_forward_kernel(Geometry g, const float* means, const float* quats,
                                       const float* scales, const float* opacities,
                                       const float* viewmats, const float* Ks, float* means2d,
                                       float* conics, float* depths, int32_t* radii, float* opac_out) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)g.B * g.C * g.N) return;
    int64_t n = idx % g.N, bc = idx / g.N, b = bc / g.C, gi = b * g.N + n;
    Camera cam = make_camera(viewmats + 16 * bc, Ks + 9 * bc, g.width, g.height);
    ProjectSettings st{g.near_plane, g.far_plane, g.eps2d, g.antialiased};
    Projected out;
    ::avatar::project_forward(means + 3 * gi, quats + 4 * gi, scales + 3 * gi, opacities[gi], cam, st, out);
    means2d[2 * idx] = out.mean2d[0];
    means2d[2 * idx + 1] = out.mean2d[1];
    conics[3 * idx] = out.conic[0];
    conics[3 * idx + 1] = out.conic[1];
    conics[3 * idx + 2] = out.conic[2];
    depths[idx] = out.depth;
    radii[idx] = out.radius;
    opac_out[idx] = out.opacity;
}

// One thread per (batch, Gaussian), looping over cameras: no atomics needed.
__global__ void project_backward_kernel(Geometry g, const float* means, const float* quats,
                                        const float* scales, const float* opacities,
                                        const float* viewmats, const float* Ks, const float* v_means2d,
                                        const float* v_conics, const float* v_depths,
                                        const float* v_opac_out, float* v_means, float* v_quats,
                                        float* v_scales, float* v_opacities, float* v_viewmats) {
    int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gi >= (int64_t)g.B * g.N) return;
    int64_t b = gi / g.N, n = gi % g.N;
    ProjectSettings st{g.near_plane, g.far_plane, g.eps2d, g.antialiased};
    float vm[3] = {0.f, 0.f, 0.f}, vq[4] = {0.f, 0.f, 0.f, 0.f}, vs[3] = {0.f, 0.f, 0.f}, vo = 0.f;
    for (int c = 0; c < g.C; ++c) {
        int64_t bc = b * g.C + c, idx = bc * g.N + n;
        Camera cam = make_camera(viewmats + 16 * bc, Ks + 9 * bc, g.width, g.height);
        float rec[12] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        ::avatar::project_backward(means + 3 * gi, quats + 4 * gi, scales + 3 * gi, opacities[gi], cam, st,
                                   v_means2d + 2 * idx, v_conics + 3 * idx, v_depths[idx], v_opac_out[idx],
                                   vm, vq, vs, &vo, rec, rec + 9);
        add_camera_grad(rec, v_viewmats + 16 * bc);
    }
    for (int k = 0; k < 3; ++k) v_means[3 * gi + k] = vm[k];
    for (int k = 0; k < 4; ++k) v_quats[4 * gi + k] = vq[k];
    for (int k = 0; k < 3; ++k) v_scales[3 * gi + k] = vs[k];
    v_opacities[gi] = vo;
}

__global__ void sh_forward_kernel(int B, int C, int N, int K, int degree, const float* coeffs,
                                  const float* means, const float* viewmats, float* colors) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)B * C * N) return;
    int64_t n = idx % N, bc = idx / N, b = bc / C, gi = b * N + n;
    float campos[3], dir[3];
    camera_center(viewmats + 16 * bc, campos);
    sh_direction(means + 3 * gi, campos, dir);
    ::avatar::sh_forward(degree, coeffs + (int64_t)K * 3 * gi, dir, colors + 3 * idx);
}

__global__ void sh_backward_kernel(int B, int C, int N, int K, int degree, const float* coeffs,
                                   const float* means, const float* viewmats, const float* v_colors,
                                   float* v_coeffs, float* v_means, float* v_viewmats) {
    int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gi >= (int64_t)B * N) return;
    int64_t b = gi / N, n = gi % N;
    float* vc = v_coeffs + (int64_t)K * 3 * gi;
    for (int k = 0; k < 3 * K; ++k) vc[k] = 0.f;
    float vm[3] = {0.f, 0.f, 0.f};
    for (int c = 0; c < C; ++c) {
        int64_t bc = b * C + c, idx = bc * N + n;
        float campos[3], v_campos[3] = {0.f, 0.f, 0.f};
        camera_center(viewmats + 16 * bc, campos);
        ::avatar::sh_backward(degree, coeffs + (int64_t)K * 3 * gi, means + 3 * gi, campos, v_colors + 3 * idx,
                              vc, vm, v_campos);
        float rec[12] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        camera_center_backward(viewmats + 16 * bc, v_campos, rec, rec + 9);
        add_camera_grad(rec, v_viewmats + 16 * bc);
    }
    for (int k = 0; k < 3; ++k) v_means[3 * gi + k] = vm[k];
}

}  // namespace

void project_forward(const Geometry& g, const float* means, const float* quats, const float* scales,
                     const float* opacities, const float* viewmats, const float* Ks, float* means2d,
                     float* conics, float* depths, int32_t* radii, float* opac_out, cudaStream_t stream) {
    int64_t n = (int64_t)g.B * g.C * g.N;
    if (n == 0) return;
    project_forward_kernel<<<blocks_for(n), THREADS, 0, stream>>>(g, means, quats, scales, opacities, viewmats,
                                                                  Ks, means2d, conics, depths, radii, opac_out);
}

void project_backward(const Geometry& g, const float* means, const float* quats, const float* scales,
                      const float* opacities, const float* viewmats, const float* Ks,
                      const float* v_means2d, const float* v_conics, const float* v_depths,
                      const float* v_opac_out, float* v_means, float* v_quats, float* v_scales,
                      float* v_opacities, float* v_viewmats, cudaStream_t stream) {
    int64_t n = (int64_t)g.B * g.N;
    if (n == 0) return;
    project_backward_kernel<<<blocks_for(n), THREADS, 0, stream>>>(
        g, means, quats, scales, opacities, viewmats, Ks, v_means2d, v_conics, v_depths, v_opac_out, v_means,
        v_quats, v_scales, v_opacities, v_viewmats);
}

void sh_forward(int B, int C, int N, int K, int degree, const float* coeffs, const float* means,
                const float* viewmats, float* colors, cudaStream_t stream) {
    int64_t n = (int64_t)B * C * N;
    if (n == 0) return;
    sh_forward_kernel<<<blocks_for(n), THREADS, 0, stream>>>(B, C, N, K, degree, coeffs, means, viewmats, colors);
}

void sh_backward(int B, int C, int N, int K, int degree, const float* coeffs, const float* means,
                 const float* viewmats, const float* v_colors, float* v_coeffs, float* v_means,
                 float* v_viewmats, cudaStream_t stream) {
    int64_t n = (int64_t)B * N;
    if (n == 0) return;
    sh_backward_kernel<<<blocks_for(n), THREADS, 0, stream>>>(B, C, N, K, degree, coeffs, means, viewmats,
                                                              v_colors, v_coeffs, v_means, v_viewmats);
}

}  // namespace cuda
}  // namespace avatar
