// Torch glue for the CUDA rasterizer (avatar._C_cuda): allocation (through torch's caching
// allocator, scratch included), the binning sequence and pointer passing; checks are shared with
// the CPU glue (bind_common.h). Kernels live in csrc/cuda/*.cu and include no torch headers.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "avatar/cuda.h"
#include "bind_common.h"

namespace {

using avatar::bind::Device;
constexpr Device DEV = Device::CUDA;

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

int bits_for(int64_t n) {   // bits needed for values 0..n-1
    int b = 0;
    while ((int64_t(1) << b) < n) ++b;
    return b;
}

// -> means2d [B,C,N,2], conics [B,C,N,3], depths [B,C,N], radii [B,C,N,2] int32, opacities [B,C,N]
std::vector<torch::Tensor> project_fwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double near_plane, double far_plane,
                                       double eps2d, bool antialiased) {
    auto g = avatar::bind::project_geometry(DEV, means, quats, scales, opacities, viewmats, Ks, width, height,
                                            near_plane, far_plane, eps2d, antialiased);
    const c10::cuda::CUDAGuard guard(means.device());
    auto f = means.options();
    auto means2d = torch::empty({g.B, g.C, g.N, 2}, f);
    auto conics = torch::empty({g.B, g.C, g.N, 3}, f);
    auto depths = torch::empty({g.B, g.C, g.N}, f);
    auto radii = torch::empty({g.B, g.C, g.N, 2}, f.dtype(torch::kInt32));
    auto opac = torch::empty({g.B, g.C, g.N}, f);
    avatar::cuda::project_forward(g, means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(),
                                  opacities.data_ptr<float>(), viewmats.data_ptr<float>(), Ks.data_ptr<float>(),
                                  means2d.data_ptr<float>(), conics.data_ptr<float>(), depths.data_ptr<float>(),
                                  radii.data_ptr<int32_t>(), opac.data_ptr<float>(), stream());
    return {means2d, conics, depths, radii, opac};
}

// -> v_means [B,N,3], v_quats [B,N,4], v_scales [B,N,3], v_opacities [B,N],
//    v_viewmats [B,C,4,4] (undefined -> None unless camera_grad)
std::vector<torch::Tensor> project_bwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double near_plane, double far_plane,
                                       double eps2d, bool antialiased, torch::Tensor v_means2d,
                                       torch::Tensor v_conics, torch::Tensor v_depths, torch::Tensor v_opac,
                                       bool camera_grad) {
    auto g = avatar::bind::project_geometry(DEV, means, quats, scales, opacities, viewmats, Ks, width, height,
                                            near_plane, far_plane, eps2d, antialiased);
    avatar::bind::check_project_grads(DEV, g, v_means2d, v_conics, v_depths, v_opac);
    const c10::cuda::CUDAGuard guard(means.device());
    auto v_means = torch::empty_like(means), v_quats = torch::empty_like(quats);
    auto v_scales = torch::empty_like(scales), v_opacities = torch::empty_like(opacities);
    torch::Tensor v_viewmats = camera_grad ? torch::zeros_like(viewmats) : torch::Tensor();
    avatar::cuda::project_backward(g, means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(),
                                   opacities.data_ptr<float>(), viewmats.data_ptr<float>(), Ks.data_ptr<float>(),
                                   v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
                                   v_depths.data_ptr<float>(), v_opac.data_ptr<float>(), v_means.data_ptr<float>(),
                                   v_quats.data_ptr<float>(), v_scales.data_ptr<float>(),
                                   v_opacities.data_ptr<float>(), avatar::bind::ptr_or_null(v_viewmats), stream());
    return {v_means, v_quats, v_scales, v_opacities, v_viewmats};
}

// coeffs [B,N,K,3], means [B,N,3], viewmats [B,C,4,4] -> colors [B,C,N,3]
torch::Tensor sh_fwd(int64_t degree, torch::Tensor coeffs, torch::Tensor means, torch::Tensor viewmats) {
    auto d = avatar::bind::sh_dims(DEV, degree, coeffs, means, viewmats);
    const c10::cuda::CUDAGuard guard(means.device());
    auto colors = torch::empty({d.B, d.C, d.N, 3}, means.options());
    avatar::cuda::sh_forward(d.B, d.C, d.N, d.K, (int)degree, coeffs.data_ptr<float>(), means.data_ptr<float>(),
                             viewmats.data_ptr<float>(), colors.data_ptr<float>(), stream());
    return colors;
}

// -> v_coeffs [B,N,K,3], v_means [B,N,3], v_viewmats [B,C,4,4] (undefined unless camera_grad)
std::vector<torch::Tensor> sh_bwd(int64_t degree, torch::Tensor coeffs, torch::Tensor means,
                                  torch::Tensor viewmats, torch::Tensor v_colors, bool camera_grad) {
    auto d = avatar::bind::sh_dims(DEV, degree, coeffs, means, viewmats);
    avatar::bind::check(v_colors, "v_colors", DEV, 4);
    avatar::bind::check_shape(v_colors, "v_colors", {d.B, d.C, d.N, 3});
    const c10::cuda::CUDAGuard guard(means.device());
    auto v_coeffs = torch::empty_like(coeffs), v_means = torch::empty_like(means);
    torch::Tensor v_viewmats = camera_grad ? torch::zeros_like(viewmats) : torch::Tensor();
    avatar::cuda::sh_backward(d.B, d.C, d.N, d.K, (int)degree, coeffs.data_ptr<float>(), means.data_ptr<float>(),
                              viewmats.data_ptr<float>(), v_colors.data_ptr<float>(), v_coeffs.data_ptr<float>(),
                              v_means.data_ptr<float>(), avatar::bind::ptr_or_null(v_viewmats), stream());
    return {v_coeffs, v_means, v_viewmats};
}

// means2d [I,N,2], conics [I,N,3], features [I,N,D], opacities [I,N], radii [I,N,2], depths [I,N]
// -> render [I,H,W,D], alphas [I,H,W,1], last [I,H,W] int32, tile_offsets [I*T+1], tile_ids [M]
std::vector<torch::Tensor> raster_fwd(torch::Tensor means2d, torch::Tensor conics, torch::Tensor features,
                                      torch::Tensor opacities, torch::Tensor radii, torch::Tensor depths,
                                      int64_t width, int64_t height) {
    auto d = avatar::bind::raster_dims(DEV, means2d, conics, features, opacities);
    avatar::bind::check_binning(DEV, d, radii, depths);
    TORCH_CHECK(d.D <= avatar::cuda::MAX_CHANNELS, "the cuda backend renders at most ",
                avatar::cuda::MAX_CHANNELS, " channels, got ", d.D);
    const c10::cuda::CUDAGuard guard(means2d.device());
    const int64_t num_tiles = (int64_t)d.I * avatar::tiles_along((int)width) * avatar::tiles_along((int)height);
    TORCH_CHECK(num_tiles < (int64_t(1) << 31), "too many (image, tile) pairs for 32-bit tile keys");
    auto f = features.options();
    auto i32 = f.dtype(torch::kInt32);
    // binning: per-splat tile counts -> offsets -> (key, splat) pairs -> radix sort -> tile ranges
    auto counts = torch::empty({(int64_t)d.I * d.N}, i32);
    avatar::cuda::tile_counts(d.I, d.N, (int)width, (int)height, means2d.data_ptr<float>(),
                              radii.data_ptr<int32_t>(), counts.data_ptr<int32_t>(), stream());
    auto ends = torch::cumsum(counts, 0, torch::kInt64);
    const int64_t M = ends.numel() ? ends[-1].item<int64_t>() : 0;       // one device sync
    TORCH_CHECK(M < (int64_t(1) << 31), "too many (splat, tile) intersections: ", M);
    auto offsets = ends - counts.to(torch::kInt64);
    auto keys = torch::empty({M}, f.dtype(torch::kInt64));
    auto values = torch::empty({M}, i32);
    avatar::cuda::tile_emit(d.I, d.N, (int)width, (int)height, means2d.data_ptr<float>(), radii.data_ptr<int32_t>(),
                            depths.data_ptr<float>(), offsets.data_ptr<int64_t>(), keys.data_ptr<int64_t>(),
                            values.data_ptr<int32_t>(), stream());
    const int end_bit = 32 + bits_for(num_tiles);
    auto sorted_keys = torch::empty_like(keys);
    auto tile_ids = torch::empty_like(values);
    const size_t temp_bytes = avatar::cuda::tile_sort_temp_bytes(M, end_bit);
    auto temp = torch::empty({(int64_t)temp_bytes}, f.dtype(torch::kUInt8));
    avatar::cuda::tile_sort(temp.data_ptr(), temp_bytes, M, end_bit, keys.data_ptr<int64_t>(),
                            sorted_keys.data_ptr<int64_t>(), values.data_ptr<int32_t>(), tile_ids.data_ptr<int32_t>(),
                            stream());
    auto tile_offsets = torch::empty({num_tiles + 1}, i32);
    avatar::cuda::tile_ranges(M, (int)num_tiles, sorted_keys.data_ptr<int64_t>(), tile_offsets.data_ptr<int32_t>(),
                              stream());
    auto render = torch::empty({d.I, height, width, d.D}, f);
    auto alphas = torch::empty({d.I, height, width, 1}, f);
    auto last = torch::empty({d.I, height, width}, i32);
    avatar::cuda::raster_forward(d.I, d.N, d.D, (int)width, (int)height, means2d.data_ptr<float>(),
                                 conics.data_ptr<float>(), features.data_ptr<float>(), opacities.data_ptr<float>(),
                                 tile_offsets.data_ptr<int32_t>(), tile_ids.data_ptr<int32_t>(),
                                 render.data_ptr<float>(), alphas.data_ptr<float>(), last.data_ptr<int32_t>(),
                                 stream());
    return {render, alphas, last, tile_offsets, tile_ids};
}

// -> v_means2d [I,N,2], v_conics [I,N,3], v_features [I,N,D], v_opacities [I,N]
std::vector<torch::Tensor> raster_bwd(torch::Tensor means2d, torch::Tensor conics, torch::Tensor features,
                                      torch::Tensor opacities, torch::Tensor tile_offsets, torch::Tensor tile_ids,
                                      torch::Tensor alphas, torch::Tensor last, torch::Tensor v_render,
                                      torch::Tensor v_alphas, int64_t width, int64_t height) {
    auto d = avatar::bind::raster_dims(DEV, means2d, conics, features, opacities);
    avatar::bind::check_raster_grads(DEV, d, width, height, tile_offsets, tile_ids, alphas, last, v_render, v_alphas);
    const c10::cuda::CUDAGuard guard(means2d.device());
    auto v_means2d = torch::zeros_like(means2d), v_conics = torch::zeros_like(conics);
    auto v_features = torch::zeros_like(features), v_opacities = torch::zeros_like(opacities);
    avatar::cuda::raster_backward(d.I, d.N, d.D, (int)width, (int)height, means2d.data_ptr<float>(),
                                  conics.data_ptr<float>(), features.data_ptr<float>(),
                                  opacities.data_ptr<float>(), tile_offsets.data_ptr<int32_t>(),
                                  tile_ids.data_ptr<int32_t>(), alphas.data_ptr<float>(), last.data_ptr<int32_t>(),
                                  v_render.data_ptr<float>(), v_alphas.data_ptr<float>(),
                                  v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
                                  v_features.data_ptr<float>(), v_opacities.data_ptr<float>(), stream());
    return {v_means2d, v_conics, v_features, v_opacities};
}

// x [N,P,2] (in [0,1]), tables [P,T,F], per-level lists of length L -> out [N,P,L*F]
torch::Tensor hashgrid_fwd(torch::Tensor x, torch::Tensor tables, std::vector<double> scales,
                           std::vector<int64_t> res, std::vector<int64_t> sizes, std::vector<int64_t> offsets,
                           std::vector<int64_t> dense) {
    auto lv = avatar::bind::hashgrid_levels(DEV, x, tables, scales, res, sizes, offsets, dense);
    const c10::cuda::CUDAGuard guard(x.device());
    auto out = torch::empty({x.size(0), x.size(1), (int64_t)lv.L * lv.F}, x.options());
    avatar::cuda::hashgrid_forward(x.size(0), (int)x.size(1), lv, x.data_ptr<float>(), tables.data_ptr<float>(),
                                   out.data_ptr<float>(), stream());
    return out;
}

// grad_out [N,P,L*F] -> grad_tables [P,T,F], grad_x [N,P,2] (undefined -> None unless x_grad)
std::vector<torch::Tensor> hashgrid_bwd(torch::Tensor x, torch::Tensor tables, std::vector<double> scales,
                                        std::vector<int64_t> res, std::vector<int64_t> sizes,
                                        std::vector<int64_t> offsets, std::vector<int64_t> dense,
                                        torch::Tensor grad_out, bool x_grad) {
    auto lv = avatar::bind::hashgrid_levels(DEV, x, tables, scales, res, sizes, offsets, dense);
    avatar::bind::check_hashgrid_grad(DEV, x, lv, grad_out);
    const c10::cuda::CUDAGuard guard(x.device());
    auto grad_tables = torch::zeros_like(tables);     // atomics accumulate into it
    torch::Tensor grad_x = x_grad ? torch::empty_like(x) : torch::Tensor();
    avatar::cuda::hashgrid_backward(x.size(0), (int)x.size(1), lv, x.data_ptr<float>(), tables.data_ptr<float>(),
                                    grad_out.data_ptr<float>(), grad_tables.data_ptr<float>(),
                                    avatar::bind::ptr_or_null(grad_x), stream());
    return {grad_tables, grad_x};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "avatar rasterizer, CUDA kernels";
    m.def("project_fwd", &project_fwd);
    m.def("project_bwd", &project_bwd);
    m.def("sh_fwd", &sh_fwd);
    m.def("sh_bwd", &sh_bwd);
    m.def("raster_fwd", &raster_fwd);
    m.def("raster_bwd", &raster_bwd);
    m.def("hashgrid_fwd", &hashgrid_fwd);
    m.def("hashgrid_bwd", &hashgrid_bwd);
}
