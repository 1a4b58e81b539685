// Torch glue shared by bind_cpu.cpp and bind_cuda.cpp: the argument checks and the Geometry of a
// call, so each bind file only allocates outputs and calls its backend's entry points. All math is
// in cuda/include/avatar/*.h. Shapes: B batch, C cameras, N Gaussians, I = B*C images, D channels,
// K SH coefficients.
#pragma once

#include <torch/extension.h>

#include <vector>

#include "avatar/common.h"
#include "avatar/hashgrid.h"

namespace avatar {
namespace bind {

enum class Device { CPU, CUDA };

// device, dtype, rank and contiguity of one tensor argument, named in the error
inline void check(const torch::Tensor& t, const char* name, Device dev, int64_t ndim,
                  c10::ScalarType dtype = torch::kFloat32) {
    const bool on = dev == Device::CUDA ? t.is_cuda() : t.device().is_cpu();
    TORCH_CHECK(on, name, " must be a ", dev == Device::CUDA ? "CUDA" : "CPU", " tensor, got ", t.device());
    TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", c10::toString(dtype), ", got ", t.scalar_type());
    TORCH_CHECK(t.dim() == ndim, name, " must have ", ndim, " dims, got ", t.sizes());
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

inline void check_shape(const torch::Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
    TORCH_CHECK(t.sizes() == c10::IntArrayRef(shape), name, " must have shape ", c10::IntArrayRef(shape),
                ", got ", t.sizes());
}

// means [B,N,3], quats [B,N,4], scales [B,N,3], opacities [B,N], viewmats [B,C,4,4], Ks [B,C,3,3]
inline Geometry project_geometry(Device dev, const torch::Tensor& means, const torch::Tensor& quats,
                                 const torch::Tensor& scales, const torch::Tensor& opacities,
                                 const torch::Tensor& viewmats, const torch::Tensor& Ks, int64_t width,
                                 int64_t height, double near_plane, double far_plane, double eps2d,
                                 bool antialiased) {
    check(means, "means", dev, 3);
    check(quats, "quats", dev, 3);
    check(scales, "scales", dev, 3);
    check(opacities, "opacities", dev, 2);
    check(viewmats, "viewmats", dev, 4);
    check(Ks, "Ks", dev, 4);
    Geometry g;
    g.B = (int)means.size(0);
    g.N = (int)means.size(1);
    g.C = (int)viewmats.size(1);
    check_shape(means, "means", {g.B, g.N, 3});
    check_shape(quats, "quats", {g.B, g.N, 4});
    check_shape(scales, "scales", {g.B, g.N, 3});
    check_shape(opacities, "opacities", {g.B, g.N});
    check_shape(viewmats, "viewmats", {g.B, g.C, 4, 4});
    check_shape(Ks, "Ks", {g.B, g.C, 3, 3});
    TORCH_CHECK(width > 0 && height > 0, "width and height must be positive, got ", width, "x", height);
    g.width = (int)width;
    g.height = (int)height;
    g.near_plane = (float)near_plane;
    g.far_plane = (float)far_plane;
    g.eps2d = (float)eps2d;
    g.antialiased = antialiased;
    return g;
}

// output gradients of the projection: v_means2d [B,C,N,2], v_conics [B,C,N,3], v_depths, v_opacities [B,C,N]
inline void check_project_grads(Device dev, const Geometry& g, const torch::Tensor& v_means2d,
                                const torch::Tensor& v_conics, const torch::Tensor& v_depths,
                                const torch::Tensor& v_opac) {
    check(v_means2d, "v_means2d", dev, 4);
    check(v_conics, "v_conics", dev, 4);
    check(v_depths, "v_depths", dev, 3);
    check(v_opac, "v_opacities", dev, 3);
    check_shape(v_means2d, "v_means2d", {g.B, g.C, g.N, 2});
    check_shape(v_conics, "v_conics", {g.B, g.C, g.N, 3});
    check_shape(v_depths, "v_depths", {g.B, g.C, g.N});
    check_shape(v_opac, "v_opacities", {g.B, g.C, g.N});
}

struct ShDims { int B, C, N, K; };

// coeffs [B,N,K,3] (K >= (degree+1)^2), means [B,N,3], viewmats [B,C,4,4]
inline ShDims sh_dims(Device dev, int64_t degree, const torch::Tensor& coeffs, const torch::Tensor& means,
                      const torch::Tensor& viewmats) {
    check(coeffs, "coeffs", dev, 4);
    check(means, "means", dev, 3);
    check(viewmats, "viewmats", dev, 4);
    TORCH_CHECK(degree >= 0 && degree <= 3, "sh degree must be in 0..3, got ", degree);
    ShDims d{(int)means.size(0), (int)viewmats.size(1), (int)means.size(1), (int)coeffs.size(2)};
    TORCH_CHECK(d.K >= (degree + 1) * (degree + 1), "coeffs has K=", d.K, " < (degree+1)^2 for degree ", degree);
    check_shape(coeffs, "coeffs", {d.B, d.N, d.K, 3});
    check_shape(viewmats, "viewmats", {d.B, d.C, 4, 4});
    return d;
}

struct RasterDims { int I, N, D; };

// means2d [I,N,2], conics [I,N,3], features [I,N,D], opacities [I,N] (radii [I,N,2] int32 and
// depths [I,N] are checked by the forward only)
inline RasterDims raster_dims(Device dev, const torch::Tensor& means2d, const torch::Tensor& conics,
                              const torch::Tensor& features, const torch::Tensor& opacities) {
    check(means2d, "means2d", dev, 3);
    check(conics, "conics", dev, 3);
    check(features, "features", dev, 3);
    check(opacities, "opacities", dev, 2);
    RasterDims d{(int)means2d.size(0), (int)means2d.size(1), (int)features.size(2)};
    check_shape(means2d, "means2d", {d.I, d.N, 2});
    check_shape(conics, "conics", {d.I, d.N, 3});
    check_shape(features, "features", {d.I, d.N, d.D});
    check_shape(opacities, "opacities", {d.I, d.N});
    return d;
}

inline void check_binning(Device dev, const RasterDims& d, const torch::Tensor& radii, const torch::Tensor& depths) {
    check(radii, "radii", dev, 3, torch::kInt32);
    check(depths, "depths", dev, 2);
    check_shape(radii, "radii", {d.I, d.N, 2});
    check_shape(depths, "depths", {d.I, d.N});
}

// image-space gradients v_render [I,H,W,D], v_alphas [I,H,W,1] and the forward's tile lists
inline void check_raster_grads(Device dev, const RasterDims& d, int64_t width, int64_t height,
                               const torch::Tensor& tile_offsets, const torch::Tensor& tile_ids,
                               const torch::Tensor& alphas, const torch::Tensor& last,
                               const torch::Tensor& v_render, const torch::Tensor& v_alphas) {
    check(tile_offsets, "tile_offsets", dev, 1, torch::kInt32);
    check(tile_ids, "tile_ids", dev, 1, torch::kInt32);
    check(alphas, "alphas", dev, 4);
    check(last, "last", dev, 3, torch::kInt32);
    check(v_render, "v_render", dev, 4);
    check(v_alphas, "v_alphas", dev, 4);
    const int64_t T = (int64_t)tiles_along((int)width) * tiles_along((int)height);
    check_shape(tile_offsets, "tile_offsets", {d.I * T + 1});
    check_shape(v_render, "v_render", {d.I, height, width, d.D});
    check_shape(v_alphas, "v_alphas", {d.I, height, width, 1});
    check_shape(alphas, "alphas", {d.I, height, width, 1});
    check_shape(last, "last", {d.I, height, width});
}

inline float* ptr_or_null(const torch::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// Hash-grid level layout from per-level lists (scales, resolutions, row counts, first rows, dense
// flags, each of length L) for tables [P,T,F]; checks x [N,P,2] and tables against each other.
inline hashgrid::Levels hashgrid_levels(Device dev, const torch::Tensor& x, const torch::Tensor& tables,
                                        const std::vector<double>& scales, const std::vector<int64_t>& res,
                                        const std::vector<int64_t>& sizes, const std::vector<int64_t>& offsets,
                                        const std::vector<int64_t>& dense) {
    check(x, "x", dev, 3);
    check(tables, "tables", dev, 3);
    TORCH_CHECK(x.size(2) == 2, "x must have shape [N,P,2], got ", x.sizes());
    TORCH_CHECK(tables.size(0) == x.size(1), "tables [P,T,F] and x [N,P,2] disagree on P: ", tables.sizes(),
                " vs ", x.sizes());
    TORCH_CHECK(x.device() == tables.device(), "x and tables must be on one device");
    const size_t L = scales.size();
    TORCH_CHECK(L <= (size_t)hashgrid::MAX_LEVELS, "at most ", hashgrid::MAX_LEVELS, " levels, got ", L);
    TORCH_CHECK(res.size() == L && sizes.size() == L && offsets.size() == L && dense.size() == L,
                "scales, resolutions, sizes, offsets and dense need one entry per level");
    hashgrid::Levels lv;
    lv.L = (int)L;
    lv.F = (int)tables.size(2);
    lv.T = tables.size(1);
    TORCH_CHECK(lv.F >= 1 && lv.F <= hashgrid::MAX_FEATURES, "features per level must be in 1..",
                hashgrid::MAX_FEATURES, ", got ", lv.F);
    for (size_t l = 0; l < L; ++l) {
        TORCH_CHECK(sizes[l] > 0 && sizes[l] <= INT32_MAX && res[l] > 0 && res[l] <= INT32_MAX,
                    "level ", l, ": bad size ", sizes[l], " / resolution ", res[l]);
        TORCH_CHECK(offsets[l] >= 0 && offsets[l] + sizes[l] <= lv.T, "level ", l, ": rows [", offsets[l], ", ",
                    offsets[l] + sizes[l], ") outside the table's ", lv.T);
        lv.scale[l] = (float)scales[l];
        lv.res[l] = (int32_t)res[l];
        lv.size[l] = (int32_t)sizes[l];
        lv.offset[l] = offsets[l];
        lv.dense[l] = dense[l] ? 1 : 0;
    }
    return lv;
}

inline void check_hashgrid_grad(Device dev, const torch::Tensor& x, const hashgrid::Levels& lv,
                                const torch::Tensor& grad_out) {
    check(grad_out, "grad_out", dev, 3);
    check_shape(grad_out, "grad_out", {x.size(0), x.size(1), (int64_t)lv.L * lv.F});
}

}  // namespace bind
}  // namespace avatar
