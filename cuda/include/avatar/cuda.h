// CUDA launchers of the rasterizer on raw device buffers (no torch here; glue in bind_cuda.cpp).
// Shapes as in avatar/cpu.h. Every launcher enqueues on `stream` and returns immediately.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "avatar/common.h"
#include "avatar/hashgrid.h"

namespace avatar {
namespace cuda {

using ::avatar::Geometry;   // avatar/common.h

constexpr int MAX_CHANNELS = 32;   // per-pixel feature channels held in registers/local memory

void project_forward(const Geometry& g, const float* means, const float* quats, const float* scales,
                     const float* opacities, const float* viewmats, const float* Ks, float* means2d,
                     float* conics, float* depths, int32_t* radii, float* opac_out, cudaStream_t stream);

void project_backward(const Geometry& g, const float* means, const float* quats, const float* scales,
                      const float* opacities, const float* viewmats, const float* Ks,
                      const float* v_means2d, const float* v_conics, const float* v_depths,
                      const float* v_opac_out, float* v_means, float* v_quats, float* v_scales,
                      float* v_opacities,
                      float* v_viewmats,       // [B,C,4,4], zero-initialised (atomics); null: not wanted
                      cudaStream_t stream);

void sh_forward(int B, int C, int N, int K, int degree, const float* coeffs, const float* means,
                const float* viewmats, float* colors, cudaStream_t stream);

void sh_backward(int B, int C, int N, int K, int degree, const float* coeffs, const float* means,
                 const float* viewmats, const float* v_colors, float* v_coeffs, float* v_means,
                 float* v_viewmats,            // [B,C,4,4], zero-initialised (atomics); null: not wanted
                 cudaStream_t stream);

// Tile binning, step 1: number of tiles touched by each splat (radii [I,N,2]). counts [I*N].
void tile_counts(int I, int N, int width, int height, const float* means2d, const int32_t* radii,
                 int32_t* counts, cudaStream_t stream);

// Step 2: for each splat, one (key, value) per touched tile at offsets (exclusive cumsum of counts):
// key = (image * T + tile) << 32 | float bits of depth (depth > 0), value = splat index in image.
void tile_emit(int I, int N, int width, int height, const float* means2d, const int32_t* radii,
               const float* depths, const int64_t* offsets, int64_t* keys, int32_t* values,
               cudaStream_t stream);

// Step 2b: stable radix sort of the M (key, value) pairs on key bits [0, end_bit) (32 depth bits
// + the bits of the largest image * T + tile), with tile_sort_temp_bytes(M, end_bit) bytes of scratch.
size_t tile_sort_temp_bytes(int64_t M, int end_bit);
void tile_sort(void* temp, size_t temp_bytes, int64_t M, int end_bit, const int64_t* keys_in,
               int64_t* keys_out, const int32_t* values_in, int32_t* values_out, cudaStream_t stream);

// Step 3 (after sorting keys): tile_offsets [I*T+1], start of each tile's run in the sorted list.
void tile_ranges(int64_t M, int num_tiles_total, const int64_t* sorted_keys, int32_t* tile_offsets,
                 cudaStream_t stream);

void raster_forward(int I, int N, int D, int width, int height, const float* means2d,
                    const float* conics, const float* features, const float* opacities,
                    const int32_t* tile_offsets, const int32_t* tile_ids, float* render, float* alphas,
                    int32_t* last, cudaStream_t stream);

// Gradient outputs must be zero-initialised (accumulated with atomics).
void raster_backward(int I, int N, int D, int width, int height, const float* means2d,
                     const float* conics, const float* features, const float* opacities,
                     const int32_t* tile_offsets, const int32_t* tile_ids, const float* alphas,
                     const int32_t* last, const float* v_render, const float* v_alphas,
                     float* v_means2d, float* v_conics, float* v_features, float* v_opacities,
                     cudaStream_t stream);

// 2D multi-resolution hash-grid encoding (avatar/hashgrid.h), shapes as in avatar/cpu.h.
void hashgrid_forward(int64_t N, int P, const hashgrid::Levels& lv, const float* x, const float* tables,
                      float* out, cudaStream_t stream);

// grad_tables [P,T,F] must be zero-initialised (atomics); grad_x [N,P,2] (written) or null.
void hashgrid_backward(int64_t N, int P, const hashgrid::Levels& lv, const float* x, const float* tables,
                       const float* grad_out, float* grad_tables, float* grad_x, cudaStream_t stream);

}  // namespace cuda
}  // namespace avatar
