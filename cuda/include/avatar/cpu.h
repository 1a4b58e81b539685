// Host (OpenMP) rasterizer entry points on raw float32 buffers; the torch glue is bind_cpu.cpp.
// Shapes: B batch, C cameras, N Gaussians, I = B*C images, D feature channels, K SH coefficients.
#pragma once

#include <cstdint>

#include "avatar/common.h"
#include "avatar/hashgrid.h"
#include <vector>

namespace avatar {
namespace cpu {

using ::avatar::Geometry;   // avatar/common.h

void project_forward(const Geometry& g,
                     const float* means,      // [B,N,3]
                     const float* quats,      // [B,N,4]
                     const float* scales,     // [B,N,3]
                     const float* opacities,  // [B,N]
                     const float* viewmats,   // [B,C,4,4]
                     const float* Ks,         // [B,C,3,3]
                     float* means2d,          // [B,C,N,2]
                     float* conics,           // [B,C,N,3]
                     float* depths,           // [B,C,N]
                     int32_t* radii,          // [B,C,N,2] per-axis extent, 0 = culled
                     float* opac_out);        // [B,C,N]

void project_backward(const Geometry& g, const float* means, const float* quats, const float* scales,
                      const float* opacities, const float* viewmats, const float* Ks,
                      const float* v_means2d,  // [B,C,N,2]
                      const float* v_conics,   // [B,C,N,3]
                      const float* v_depths,   // [B,C,N]
                      const float* v_opac_out, // [B,C,N]
                      float* v_means,          // [B,N,3]  (written)
                      float* v_quats,          // [B,N,4]
                      float* v_scales,         // [B,N,3]
                      float* v_opacities,      // [B,N]
                      float* v_viewmats);      // [B,C,4,4] (written; bottom row 0), or null: not wanted

void sh_forward(int B, int C, int N, int K, int degree,
                const float* coeffs,    // [B,N,K,3]
                const float* means,     // [B,N,3]
                const float* viewmats,  // [B,C,4,4]
                float* colors);         // [B,C,N,3]

void sh_backward(int B, int C, int N, int K, int degree, const float* coeffs, const float* means,
                 const float* viewmats,
                 const float* v_colors,  // [B,C,N,3]
                 float* v_coeffs,        // [B,N,K,3] (written)
                 float* v_means,         // [B,N,3]   (written)
                 float* v_viewmats);     // [B,C,4,4] (written; bottom row 0), or null: not wanted

// Tile binning + front-to-back compositing. tile_offsets [I*T+1] and tile_ids (Gaussian index per
// (image, tile) entry, sorted by (tile, depth, index)) are filled for the backward pass.
void raster_forward(int I, int N, int D, int width, int height,
                    const float* means2d,    // [I,N,2]
                    const float* conics,     // [I,N,3]
                    const float* features,   // [I,N,D]
                    const float* opacities,  // [I,N]
                    const int32_t* radii,    // [I,N,2]
                    const float* depths,     // [I,N]
                    std::vector<int32_t>& tile_offsets, std::vector<int32_t>& tile_ids,
                    float* render,           // [I,H,W,D]
                    float* alphas,           // [I,H,W]
                    int32_t* last);          // [I,H,W] entries of the tile list consumed

void raster_backward(int I, int N, int D, int width, int height, const float* means2d,
                     const float* conics, const float* features, const float* opacities,
                     const int32_t* tile_offsets, const int32_t* tile_ids,
                     const float* alphas, const int32_t* last,
                     const float* v_render,   // [I,H,W,D]
                     const float* v_alphas,   // [I,H,W]
                     float* v_means2d,        // [I,N,2] (written)
                     float* v_conics,         // [I,N,3]
                     float* v_features,       // [I,N,D]
                     float* v_opacities);     // [I,N]

// 2D multi-resolution hash-grid encoding (avatar/hashgrid.h) of P planes per point.
// x [N,P,2] in [0,1], tables [P,T,F] -> out [N,P,L*F] (levels concatenated per plane).
void hashgrid_forward(int64_t N, int P, const hashgrid::Levels& lv, const float* x, const float* tables,
                      float* out);

// grad_out [N,P,L*F] -> grad_tables [P,T,F] (written, rows no point touches are 0) and, when not
// null, grad_x [N,P,2] (written). Deterministic: each (plane, level) table range is summed by one thread.
void hashgrid_backward(int64_t N, int P, const hashgrid::Levels& lv, const float* x, const float* tables,
                       const float* grad_out, float* grad_tables, float* grad_x);

}  // namespace cpu
}  // namespace avatar
