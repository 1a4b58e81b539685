// Per-Gaussian projection and SH kernels: thin CUDA schedules over the shared math in
// cuda/include/avatar/{project,sh}.h (the CPU twin runs the same functions).
#include "avatar/cuda.h"
#include "avatar/project.h"
#include "avatar/sh.h"

namespace avatar {
namespace cuda {

namespace {

constexpr int THREADS = 256;
constexpr int WARPS = THREADS / 32;
constexpr unsigned FULL = 0xffffffffu;

inline unsigned blocks_for(int64_t n) { return (unsigned)((n + THREADS - 1) / THREADS); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(FULL, v, offset);
    return v;
}

// Adds every thread's 12-float camera-gradient record (v_R row-major, v_t) for camera `cam`
// (-1: none) into v_viewmats [n_cam,4,4]. Consecutive threads hold consecutive Gaussians of one
// batch entry, so a warp (and usually the whole block) shares one camera: its records are summed
// with shuffles, then across warps in shared memory, and the block issues 12 atomics instead of
// 12 per thread. Warps that straddle two cameras fall back to per-thread atomics.
// Must be reached by every thread of the block.
__device__ void add_camera_grad_block(const float* rec, int64_t cam, float* v_viewmats) {
    __shared__ float s_rec[WARPS][12];
    __shared__ long long s_cam[WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long cam0 = __shfl_sync(FULL, (long long)cam, 0);
    const bool uniform = __all_sync(FULL, cam == cam0 || cam < 0);
    if (!uniform && cam >= 0) {
        for (int i = 0; i < 3; ++i) {
            for (int j = 0; j < 3; ++j)
                if (rec[3 * i + j] != 0.f) atomicAdd(v_viewmats + 16 * cam + 4 * i + j, rec[3 * i + j]);
            if (rec[9 + i] != 0.f) atomicAdd(v_viewmats + 16 * cam + 4 * i + 3, rec[9 + i]);
        }
    }
#pragma unroll
    for (int k = 0; k < 12; ++k) {
        const float v = warp_sum(uniform ? rec[k] : 0.f);
        if (lane == 0) s_rec[warp][k] = v;
    }
    if (lane == 0) s_cam[warp] = uniform ? cam0 : -1;
    __syncthreads();
    if (threadIdx.x < 12) {
        const int k = threadIdx.x;
        const int dst = 4 * (k < 9 ? k / 3 : k - 9) + (k < 9 ? k % 3 : 3);   // v_R[i][j] or v_t[i]
        const long long c0 = s_cam[0];
        float acc = 0.f;
        for (int w = 0; w < WARPS; ++w) {
            if (s_cam[w] < 0) continue;
            if (s_cam[w] == c0) acc += s_rec[w][k];
            else if (s_rec[w][k] != 0.f) atomicAdd(v_viewmats + 16 * s_cam[w] + dst, s_rec[w][k]);
        }
        if (c0 >= 0 && acc != 0.f) atomicAdd(v_viewmats + 16 * c0 + dst, acc);
    }
    __syncthreads();   // s_rec / s_cam are reused by the next call
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
    radii[2 * idx] = out.radius[0];
    radii[2 * idx + 1] = out.radius[1];
    opac_out[idx] = out.opacity;
}

// One thread per (batch, Gaussian), looping over cameras: per-Gaussian gradients need no atomics;
// the camera gradient (only when v_viewmats is not null) is reduced per block.
template <bool CAM_GRAD>
__global__ void project_backward_kernel(Geometry g, const float* means, const float* quats,
                                        const float* scales, const float* opacities,
                                        const float* viewmats, const float* Ks, const float* v_means2d,
                                        const float* v_conics, const float* v_depths,
                                        const float* v_opac_out, float* v_means, float* v_quats,
                                        float* v_scales, float* v_opacities, float* v_viewmats) {
    const int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = gi < (int64_t)g.B * g.N;          // no early return: the block reduces together
    const int64_t b = active ? gi / g.N : 0, n = active ? gi % g.N : 0;
    ProjectSettings st{g.near_plane, g.far_plane, g.eps2d, g.antialiased};
    float vm[3] = {0.f, 0.f, 0.f}, vq[4] = {0.f, 0.f, 0.f, 0.f}, vs[3] = {0.f, 0.f, 0.f}, vo = 0.f;
    for (int c = 0; c < g.C; ++c) {
        const int64_t bc = b * g.C + c, idx = bc * g.N + n;
        float rec[12] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (active) {
            Camera cam = make_camera(viewmats + 16 * bc, Ks + 9 * bc, g.width, g.height);
            ::avatar::project_backward(means + 3 * gi, quats + 4 * gi, scales + 3 * gi, opacities[gi], cam, st,
                                       v_means2d + 2 * idx, v_conics + 3 * idx, v_depths[idx], v_opac_out[idx],
                                       vm, vq, vs, &vo, CAM_GRAD ? rec : nullptr, CAM_GRAD ? rec + 9 : nullptr);
        }
        if (CAM_GRAD) add_camera_grad_block(rec, active ? bc : -1, v_viewmats);
    }
    if (!active) return;
    for (int k = 0; k < 3; ++k) v_means[3 * gi + k] = vm[k];
    for (int k = 0; k < 4; ++k) v_quats[4 * gi + k] = vq[k];
    for (int k = 0; k < 3; ++k) v_scales[3 * gi + k] = vs[k];
    v_opacities[gi] = vo;
}

// The SH degree is a template argument so the basis arrays unroll into registers.
template <int DEG>
__global__ void sh_forward_kernel(int B, int C, int N, int K, const float* coeffs, const float* means,
                                  const float* viewmats, float* colors) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)B * C * N) return;
    int64_t n = idx % N, bc = idx / N, b = bc / C, gi = b * N + n;
    float campos[3], dir[3];
    camera_center(viewmats + 16 * bc, campos);
    sh_direction(means + 3 * gi, campos, dir);
    ::avatar::sh_forward(DEG, coeffs + (int64_t)K * 3 * gi, dir, colors + 3 * idx);
}

template <int DEG, bool CAM_GRAD>
__global__ void sh_backward_kernel(int B, int C, int N, int K, const float* coeffs, const float* means,
                                   const float* viewmats, const float* v_colors, float* v_coeffs,
                                   float* v_means, float* v_viewmats) {
    const int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = gi < (int64_t)B * N;
    const int64_t b = active ? gi / N : 0, n = active ? gi % N : 0;
    float* vc = v_coeffs + (int64_t)K * 3 * gi;
    if (active)
        for (int k = 0; k < 3 * K; ++k) vc[k] = 0.f;
    float vm[3] = {0.f, 0.f, 0.f};
    for (int c = 0; c < C; ++c) {
        const int64_t bc = b * C + c, idx = bc * N + n;
        float rec[12] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (active) {
            float campos[3], v_campos[3] = {0.f, 0.f, 0.f};
            camera_center(viewmats + 16 * bc, campos);
            ::avatar::sh_backward(DEG, coeffs + (int64_t)K * 3 * gi, means + 3 * gi, campos, v_colors + 3 * idx,
                                  vc, vm, CAM_GRAD ? v_campos : nullptr);
            if (CAM_GRAD) camera_center_backward(viewmats + 16 * bc, v_campos, rec, rec + 9);
        }
        if (CAM_GRAD) add_camera_grad_block(rec, active ? bc : -1, v_viewmats);
    }
    if (!active) return;
    for (int k = 0; k < 3; ++k) v_means[3 * gi + k] = vm[k];
}

template <int DEG>
void sh_backward_launch(unsigned blocks, cudaStream_t stream, int B, int C, int N, int K, const float* coeffs,
                        const float* means, const float* viewmats, const float* v_colors, float* v_coeffs,
                        float* v_means, float* v_viewmats) {
    if (v_viewmats)
        sh_backward_kernel<DEG, true><<<blocks, THREADS, 0, stream>>>(B, C, N, K, coeffs, means, viewmats, v_colors,
                                                                     v_coeffs, v_means, v_viewmats);
    else
        sh_backward_kernel<DEG, false><<<blocks, THREADS, 0, stream>>>(B, C, N, K, coeffs, means, viewmats,
                                                                      v_colors, v_coeffs, v_means, nullptr);
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
    if (v_viewmats)
        project_backward_kernel<true><<<blocks_for(n), THREADS, 0, stream>>>(
            g, means, quats, scales, opacities, viewmats, Ks, v_means2d, v_conics, v_depths, v_opac_out, v_means,
            v_quats, v_scales, v_opacities, v_viewmats);
    else
        project_backward_kernel<false><<<blocks_for(n), THREADS, 0, stream>>>(
            g, means, quats, scales, opacities, viewmats, Ks, v_means2d, v_conics, v_depths, v_opac_out, v_means,
            v_quats, v_scales, v_opacities, nullptr);
}

void sh_forward(int B, int C, int N, int K, int degree, const float* coeffs, const float* means,
                const float* viewmats, float* colors, cudaStream_t stream) {
    int64_t n = (int64_t)B * C * N;
    if (n == 0) return;
    const unsigned blocks = blocks_for(n);
    switch (degree) {
        case 0: sh_forward_kernel<0><<<blocks, THREADS, 0, stream>>>(B, C, N, K, coeffs, means, viewmats, colors); break;
        case 1: sh_forward_kernel<1><<<blocks, THREADS, 0, stream>>>(B, C, N, K, coeffs, means, viewmats, colors); break;
        case 2: sh_forward_kernel<2><<<blocks, THREADS, 0, stream>>>(B, C, N, K, coeffs, means, viewmats, colors); break;
        default: sh_forward_kernel<3><<<blocks, THREADS, 0, stream>>>(B, C, N, K, coeffs, means, viewmats, colors);
    }
}

void sh_backward(int B, int C, int N, int K, int degree, const float* coeffs, const float* means,
                 const float* viewmats, const float* v_colors, float* v_coeffs, float* v_means,
                 float* v_viewmats, cudaStream_t stream) {
    int64_t n = (int64_t)B * N;
    if (n == 0) return;
    const unsigned blocks = blocks_for(n);
    switch (degree) {
        case 0: sh_backward_launch<0>(blocks, stream, B, C, N, K, coeffs, means, viewmats, v_colors, v_coeffs, v_means, v_viewmats); break;
        case 1: sh_backward_launch<1>(blocks, stream, B, C, N, K, coeffs, means, viewmats, v_colors, v_coeffs, v_means, v_viewmats); break;
        case 2: sh_backward_launch<2>(blocks, stream, B, C, N, K, coeffs, means, viewmats, v_colors, v_coeffs, v_means, v_viewmats); break;
        default: sh_backward_launch<3>(blocks, stream, B, C, N, K, coeffs, means, viewmats, v_colors, v_coeffs, v_means, v_viewmats);
    }
}

}  // namespace cuda
}  // namespace avatar
