// Tile binning and per-tile compositing kernels (forward front-to-back, backward back-to-front),
// over the shared per-pixel math in cuda/include/avatar/raster.h.
//
// Binning: one (key, value) per (splat, touched tile), key = (image * T + tile) << 32 | depth bits,
// sorted by a CUB radix sort over only the bits the keys use (32 depth bits + ceil(log2(I*T))).
// One 16x16 thread block per (tile, image); each thread owns one pixel. Splats of the tile's
// depth-sorted run are staged in shared memory in batches of 256 (geometry, opacity and, for the
// common channel counts 1/3/4, the features); the block stops as soon as all of its pixels have
// terminated (transmittance would drop to <= 1e-4). The backward pass walks the same runs in
// reverse; a warp whose lanes all miss a splat skips it, otherwise the lanes' gradients are summed
// with shuffles and one lane issues the atomics. Channel counts 1/3/4 are template arguments so the
// per-pixel accumulators live in registers and the features come from shared memory; other counts
// (<= MAX_CHANNELS) use fully unrolled, guarded MAX_CHANNELS loops (registers too, ptxas: no stack).
#include <cub/device/device_radix_sort.cuh>

#include "avatar/cuda.h"
#include "avatar/raster.h"

namespace avatar {
namespace cuda {

namespace {

constexpr int BLOCK = TILE * TILE;

// Sum over the 32 lanes of a warp; the result is valid in lane 0.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

__global__ void tile_counts_kernel(int I, int N, int tiles_x, int tiles_y, const float* means2d,
                                   const int32_t* radii, int32_t* counts) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)I * N) return;
    if (radii[2 * idx] <= 0) { counts[idx] = 0; return; }
    int tx0, tx1, ty0, ty1;
    tile_bounds(means2d[2 * idx], means2d[2 * idx + 1], radii + 2 * idx, tiles_x, tiles_y, &tx0, &tx1, &ty0, &ty1);
    counts[idx] = (tx1 - tx0) * (ty1 - ty0);
}

__global__ void tile_emit_kernel(int I, int N, int tiles_x, int tiles_y, const float* means2d,
                                 const int32_t* radii, const float* depths, const int64_t* offsets,
                                 int64_t* keys, int32_t* values) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)I * N || radii[2 * idx] <= 0) return;
    int64_t image = idx / N;
    int32_t n = (int32_t)(idx % N);
    int tx0, tx1, ty0, ty1;
    tile_bounds(means2d[2 * idx], means2d[2 * idx + 1], radii + 2 * idx, tiles_x, tiles_y, &tx0, &tx1, &ty0, &ty1);
    // depth > near > 0, so its IEEE bits order like the float
    int64_t dbits = (int64_t)(uint32_t)__float_as_uint(depths[idx]);
    int64_t cur = offsets[idx];
    int64_t T = (int64_t)tiles_x * tiles_y;
    for (int ty = ty0; ty < ty1; ++ty)
        for (int tx = tx0; tx < tx1; ++tx) {
            keys[cur] = ((image * T + ty * tiles_x + tx) << 32) | dbits;
            values[cur] = n;
            ++cur;
        }
}

__global__ void tile_ranges_kernel(int64_t M, int num_tiles, const int64_t* keys, int32_t* offsets) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx > M) return;
    // offsets[t] = first index whose tile >= t; write the run starts between neighbouring keys
    int64_t prev = idx == 0 ? -1 : (keys[idx - 1] >> 32);
    int64_t cur = idx == M ? num_tiles : (keys[idx] >> 32);
    for (int64_t t = prev + 1; t <= cur; ++t) offsets[t] = (int32_t)idx;
}

// CD > 0: exactly CD channels (registers, features staged in shared memory); CD == 0: D <= MAX_CHANNELS.
template <int CD>
__global__ void raster_forward_kernel(int N, int D, int width, int height, int tiles_x,
                                      const float* means2d, const float* conics, const float* features,
                                      const float* opacities, const int32_t* tile_offsets,
                                      const int32_t* tile_ids, float* render, float* alphas, int32_t* last) {
    constexpr int NC = CD > 0 ? CD : MAX_CHANNELS;
    const int Dn = CD > 0 ? CD : D;
    const int image = blockIdx.z;
    const int tile = blockIdx.y * tiles_x + blockIdx.x;
    const int T = tiles_x * gridDim.y;
    const int px = blockIdx.x * TILE + threadIdx.x, py = blockIdx.y * TILE + threadIdx.y;
    const int tid = threadIdx.y * TILE + threadIdx.x;
    const bool inside = px < width && py < height;
    const int64_t gofs = (int64_t)image * N;
    const int32_t start = tile_offsets[(int64_t)image * T + tile], end = tile_offsets[(int64_t)image * T + tile + 1];

    __shared__ int32_t s_id[BLOCK];
    __shared__ float s_m[BLOCK][2];
    __shared__ float s_con[BLOCK][3];
    __shared__ float s_op[BLOCK];
    __shared__ float s_f[CD > 0 ? BLOCK : 1][CD > 0 ? CD : 1];

    const float fx = (float)px + 0.5f, fy = (float)py + 0.5f;
    float acc[NC];
#pragma unroll
    for (int d = 0; d < NC; ++d) acc[d] = 0.f;
    float Tr = 1.f;
    int32_t consumed = 0;
    bool done = !inside;
    for (int32_t base = start; base < end; base += BLOCK) {
        if (__syncthreads_count(done) == BLOCK) break;
        int32_t j = base + tid;
        if (j < end) {
            int32_t n = tile_ids[j];
            int64_t gi = gofs + n;
            s_id[tid] = n;
            s_m[tid][0] = means2d[2 * gi];
            s_m[tid][1] = means2d[2 * gi + 1];
            s_con[tid][0] = conics[3 * gi];
            s_con[tid][1] = conics[3 * gi + 1];
            s_con[tid][2] = conics[3 * gi + 2];
            s_op[tid] = opacities[gi];
            if (CD > 0) {
#pragma unroll
                for (int d = 0; d < (CD > 0 ? CD : 1); ++d) s_f[tid][d] = features[gi * Dn + d];
            }
        }
        __syncthreads();
        int cnt = min(BLOCK, end - base);
        for (int k = 0; k < cnt && !done; ++k) {
            const float dx = s_m[k][0] - fx, dy = s_m[k][1] - fy;
            const float sigma = splat_sigma(s_con[k], dx, dy);
            float alpha, raw;
            if (!splat_alpha(s_op[k], sigma, &alpha, &raw)) continue;
            const float next_T = Tr * (1.f - alpha);
            if (next_T <= T_MIN) { done = true; break; }
            const float w = alpha * Tr;
            if (CD > 0) {
#pragma unroll
                for (int d = 0; d < NC; ++d) acc[d] += w * s_f[k][CD > 0 ? d : 0];
            } else {     // unrolled over MAX_CHANNELS with a guard: constant indices keep acc in registers
                const float* f = features + (gofs + s_id[k]) * D;
#pragma unroll
                for (int d = 0; d < NC; ++d)
                    if (d < Dn) acc[d] += w * f[d];
            }
            Tr = next_T;
            consumed = base + k - start + 1;
        }
    }
    if (!inside) return;
    const int64_t pix = (int64_t)image * width * height + (int64_t)py * width + px;
#pragma unroll
    for (int d = 0; d < NC; ++d)
        if (d < Dn) render[pix * Dn + d] = acc[d];
    alphas[pix] = 1.f - Tr;
    last[pix] = consumed;
}

template <int CD>
__global__ void raster_backward_kernel(int N, int D, int width, int height, int tiles_x,
                                       const float* means2d, const float* conics, const float* features,
                                       const float* opacities, const int32_t* tile_offsets,
                                       const int32_t* tile_ids, const float* alphas, const int32_t* last,
                                       const float* v_render, const float* v_alphas, float* v_means2d,
                                       float* v_conics, float* v_features, float* v_opacities) {
    constexpr int NC = CD > 0 ? CD : MAX_CHANNELS;
    const int Dn = CD > 0 ? CD : D;
    const int image = blockIdx.z;
    const int tile = blockIdx.y * tiles_x + blockIdx.x;
    const int T = tiles_x * gridDim.y;
    const int px = blockIdx.x * TILE + threadIdx.x, py = blockIdx.y * TILE + threadIdx.y;
    const int tid = threadIdx.y * TILE + threadIdx.x;
    const int lane = tid & 31;
    const bool inside = px < width && py < height;
    const int64_t gofs = (int64_t)image * N;
    const int32_t start = tile_offsets[(int64_t)image * T + tile];
    const int64_t pix = (int64_t)image * width * height + (int64_t)py * width + px;

    __shared__ int32_t s_id[BLOCK];
    __shared__ float s_m[BLOCK][2];
    __shared__ float s_con[BLOCK][3];
    __shared__ float s_op[BLOCK];
    __shared__ float s_f[CD > 0 ? BLOCK : 1][CD > 0 ? CD : 1];

    const float fx = (float)px + 0.5f, fy = (float)py + 0.5f;
    const int32_t my_last = inside ? start + last[pix] : start;    // one past the last consumed entry
    const float T_final = inside ? 1.f - alphas[pix] : 1.f;
    const float vA = inside ? v_alphas[pix] : 0.f;
    float vC[NC], S[NC];
#pragma unroll
    for (int d = 0; d < NC; ++d) {
        vC[d] = (inside && d < Dn) ? v_render[pix * Dn + d] : 0.f;
        S[d] = 0.f;
    }
    float Tr = T_final;
    // the furthest entry any pixel of this block consumed
    __shared__ int32_t s_max_last;
    if (tid == 0) s_max_last = start;
    __syncthreads();
    atomicMax(&s_max_last, my_last);
    __syncthreads();
    const int32_t block_last = s_max_last;

    for (int32_t top = block_last; top > start; top -= BLOCK) {
        const int32_t lo = max(start, top - BLOCK);
        __syncthreads();
        int32_t j = top - 1 - tid;                 // s_*[k] holds entry top - 1 - k
        if (j >= lo) {
            int32_t n = tile_ids[j];
            int64_t gi = gofs + n;
            s_id[tid] = n;
            s_m[tid][0] = means2d[2 * gi];
            s_m[tid][1] = means2d[2 * gi + 1];
            s_con[tid][0] = conics[3 * gi];
            s_con[tid][1] = conics[3 * gi + 1];
            s_con[tid][2] = conics[3 * gi + 2];
            s_op[tid] = opacities[gi];
            if (CD > 0) {
#pragma unroll
                for (int d = 0; d < (CD > 0 ? CD : 1); ++d) s_f[tid][d] = features[gi * Dn + d];
            }
        }
        __syncthreads();
        const int cnt = top - lo;
        // every thread walks the same k sequence, so a warp can sum its lanes' gradients for splat
        // k with shuffles and issue one atomic per value instead of 32
        for (int k = 0; k < cnt; ++k) {
            const int32_t entry = top - 1 - k;
            bool valid = entry < my_last;
            float dx = 0.f, dy = 0.f, sigma = 0.f, alpha = 0.f, raw = 0.f;
            if (valid) {
                dx = s_m[k][0] - fx;
                dy = s_m[k][1] - fy;
                sigma = splat_sigma(s_con[k], dx, dy);
                valid = splat_alpha(s_op[k], sigma, &alpha, &raw);
            }
            if (!__any_sync(0xffffffffu, valid)) continue;           // warp-uniform skip
            const int64_t gi = gofs + s_id[k];
            float f[NC];
#pragma unroll
            for (int d = 0; d < NC; ++d)
                f[d] = CD > 0 ? s_f[k][CD > 0 ? d : 0] : (d < Dn ? features[gi * Dn + d] : 0.f);
            float w = 0.f, v_alpha = 0.f;
            if (valid) {
                const float om = 1.f - alpha;
                Tr = Tr / om;
                w = alpha * Tr;
                v_alpha = vA * T_final / om;
#pragma unroll
                for (int d = 0; d < NC; ++d) v_alpha += vC[d] * (f[d] * Tr - S[d] / om);
#pragma unroll
                for (int d = 0; d < NC; ++d) S[d] += f[d] * w;
            }
#pragma unroll
            for (int d = 0; d < NC; ++d) {
                if (d >= Dn) break;
                const float v = warp_sum(valid ? w * vC[d] : 0.f);
                if (lane == 0 && v != 0.f) atomicAdd(v_features + gi * Dn + d, v);
            }
            float vm[2] = {0.f, 0.f}, vc[3] = {0.f, 0.f, 0.f}, vo = 0.f;
            if (valid) splat_alpha_backward(s_op[k], s_con[k], dx, dy, sigma, raw, alpha, v_alpha, vm, vc, &vo);
            vm[0] = warp_sum(vm[0]);
            vm[1] = warp_sum(vm[1]);
            vc[0] = warp_sum(vc[0]);
            vc[1] = warp_sum(vc[1]);
            vc[2] = warp_sum(vc[2]);
            vo = warp_sum(vo);
            if (lane == 0) {
                atomicAdd(v_means2d + 2 * gi, vm[0]);
                atomicAdd(v_means2d + 2 * gi + 1, vm[1]);
                atomicAdd(v_conics + 3 * gi, vc[0]);
                atomicAdd(v_conics + 3 * gi + 1, vc[1]);
                atomicAdd(v_conics + 3 * gi + 2, vc[2]);
                atomicAdd(v_opacities + gi, vo);
            }
        }
    }
}

}  // namespace

void tile_counts(int I, int N, int width, int height, const float* means2d, const int32_t* radii,
                 int32_t* counts, cudaStream_t stream) {
    int64_t n = (int64_t)I * N;
    if (n == 0) return;
    int tiles_x = (width + TILE - 1) / TILE, tiles_y = (height + TILE - 1) / TILE;
    tile_counts_kernel<<<(unsigned)((n + 255) / 256), 256, 0, stream>>>(I, N, tiles_x, tiles_y, means2d, radii,
                                                                       counts);
}

void tile_emit(int I, int N, int width, int height, const float* means2d, const int32_t* radii,
               const float* depths, const int64_t* offsets, int64_t* keys, int32_t* values,
               cudaStream_t stream) {
    int64_t n = (int64_t)I * N;
    if (n == 0) return;
    int tiles_x = (width + TILE - 1) / TILE, tiles_y = (height + TILE - 1) / TILE;
    tile_emit_kernel<<<(unsigned)((n + 255) / 256), 256, 0, stream>>>(I, N, tiles_x, tiles_y, means2d, radii,
                                                                     depths, offsets, keys, values);
}

void tile_ranges(int64_t M, int num_tiles_total, const int64_t* sorted_keys, int32_t* tile_offsets,
                 cudaStream_t stream) {
    tile_ranges_kernel<<<(unsigned)((M + 1 + 255) / 256), 256, 0, stream>>>(M, num_tiles_total, sorted_keys,
                                                                           tile_offsets);
}

size_t tile_sort_temp_bytes(int64_t M, int end_bit) {
    size_t bytes = 0;
    cub::DeviceRadixSort::SortPairs(nullptr, bytes, (const unsigned long long*)nullptr,
                                    (unsigned long long*)nullptr, (const int32_t*)nullptr, (int32_t*)nullptr,
                                    (int)M, 0, end_bit);
    return bytes;
}

void tile_sort(void* temp, size_t temp_bytes, int64_t M, int end_bit, const int64_t* keys_in,
               int64_t* keys_out, const int32_t* values_in, int32_t* values_out, cudaStream_t stream) {
    if (M == 0) return;
    // keys are >= 0, so their unsigned order is their order; radix sorts are stable
    cub::DeviceRadixSort::SortPairs(temp, temp_bytes, reinterpret_cast<const unsigned long long*>(keys_in),
                                    reinterpret_cast<unsigned long long*>(keys_out), values_in, values_out,
                                    (int)M, 0, end_bit, stream);
}

#define AVATAR_RASTER_DISPATCH(KERNEL, ...)                                                          \
    switch (D) {                                                                                     \
        case 1: KERNEL<1><<<grid, block, 0, stream>>>(__VA_ARGS__); break;                           \
        case 3: KERNEL<3><<<grid, block, 0, stream>>>(__VA_ARGS__); break;                           \
        case 4: KERNEL<4><<<grid, block, 0, stream>>>(__VA_ARGS__); break;                           \
        default: KERNEL<0><<<grid, block, 0, stream>>>(__VA_ARGS__);                                 \
    }

void raster_forward(int I, int N, int D, int width, int height, const float* means2d,
                    const float* conics, const float* features, const float* opacities,
                    const int32_t* tile_offsets, const int32_t* tile_ids, float* render, float* alphas,
                    int32_t* last, cudaStream_t stream) {
    if (I == 0) return;
    int tiles_x = (width + TILE - 1) / TILE, tiles_y = (height + TILE - 1) / TILE;
    dim3 grid(tiles_x, tiles_y, I), block(TILE, TILE, 1);
    AVATAR_RASTER_DISPATCH(raster_forward_kernel, N, D, width, height, tiles_x, means2d, conics, features,
                           opacities, tile_offsets, tile_ids, render, alphas, last)
}

void raster_backward(int I, int N, int D, int width, int height, const float* means2d,
                     const float* conics, const float* features, const float* opacities,
                     const int32_t* tile_offsets, const int32_t* tile_ids, const float* alphas,
                     const int32_t* last, const float* v_render, const float* v_alphas,
                     float* v_means2d, float* v_conics, float* v_features, float* v_opacities,
                     cudaStream_t stream) {
    if (I == 0) return;
    int tiles_x = (width + TILE - 1) / TILE, tiles_y = (height + TILE - 1) / TILE;
    dim3 grid(tiles_x, tiles_y, I), block(TILE, TILE, 1);
    AVATAR_RASTER_DISPATCH(raster_backward_kernel, N, D, width, height, tiles_x, means2d, conics, features,
                           opacities, tile_offsets, tile_ids, alphas, last, v_render, v_alphas, v_means2d,
                           v_conics, v_features, v_opacities)
}

#undef AVATAR_RASTER_DISPATCH

}  // namespace cuda
}  // namespace avatar
