// Torch glue for the CPU twin (avatar._C_cpu): allocation and pointer passing; checks are shared
// with the CUDA glue (bind_common.h). All math is in cuda/include/avatar/*.h and csrc/cpu/*.cpp.
#include <cstring>
#include <vector>

#include "avatar/cpu.h"
#include "bind_common.h"

namespace {

using avatar::bind::Device;
constexpr Device DEV = Device::CPU;

// -> means2d [B,C,N,2], conics [B,C,N,3], depths [B,C,N], radii [B,C,N,2] int32, opacities [B,C,N]
std::vector<torch::Tensor> project_fwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double near_plane, double far_plane,
                                       double eps2d, bool antialiased) {
    auto g = avatar::bind::project_geometry(DEV, means, quats, scales, opacities, viewmats, Ks, width, height,
                                            near_plane, far_plane, eps2d, antialiased);
    auto f = means.options();
    auto means2d = torch::empty({g.B, g.C, g.N, 2}, f);
    auto conics = torch::empty({g.B, g.C, g.N, 3}, f);
    auto depths = torch::empty({g.B, g.C, g.N}, f);
    auto radii = torch::empty({g.B, g.C, g.N, 2}, f.dtype(torch::kInt32));
    auto opac = torch::empty({g.B, g.C, g.N}, f);
    avatar::cpu::project_forward(g, means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(),
                                 opacities.data_ptr<float>(), viewmats.data_ptr<float>(), Ks.data_ptr<float>(),
                                 means2d.data_ptr<float>(), conics.data_ptr<float>(), depths.data_ptr<float>(),
                                 radii.data_ptr<int32_t>(), opac.data_ptr<float>());
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
    auto v_means = torch::empty_like(means), v_quats = torch::empty_like(quats);
    auto v_scales = torch::empty_like(scales), v_opacities = torch::empty_like(opacities);
    torch::Tensor v_viewmats = camera_grad ? torch::empty_like(viewmats) : torch::Tensor();
    avatar::cpu::project_backward(g, means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(),
                                  opacities.data_ptr<float>(), viewmats.data_ptr<float>(), Ks.data_ptr<float>(),
                                  v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(), v_depths.data_ptr<float>(),
                                  v_opac.data_ptr<float>(), v_means.data_ptr<float>(), v_quats.data_ptr<float>(),
                                  v_scales.data_ptr<float>(), v_opacities.data_ptr<float>(),
                                  avatar::bind::ptr_or_null(v_viewmats));
    return {v_means, v_quats, v_scales, v_opacities, v_viewmats};
}

// coeffs [B,N,K,3], means [B,N,3], viewmats [B,C,4,4] -> colors [B,C,N,3]
torch::Tensor sh_fwd(int64_t degree, torch::Tensor coeffs, torch::Tensor means, torch::Tensor viewmats) {
    auto d = avatar::bind::sh_dims(DEV, degree, coeffs, means, viewmats);
    auto colors = torch::empty({d.B, d.C, d.N, 3}, means.options());
    avatar::cpu::sh_forward(d.B, d.C, d.N, d.K, (int)degree, coeffs.data_ptr<float>(), means.data_ptr<float>(),
                            viewmats.data_ptr<float>(), colors.data_ptr<float>());
    return colors;
}

// -> v_coeffs [B,N,K,3], v_means [B,N,3], v_viewmats [B,C,4,4] (undefined unless camera_grad)
std::vector<torch::Tensor> sh_bwd(int64_t degree, torch::Tensor coeffs, torch::Tensor means,
                                  torch::Tensor viewmats, torch::Tensor v_colors, bool camera_grad) {
    auto d = avatar::bind::sh_dims(DEV, degree, coeffs, means, viewmats);
    avatar::bind::check(v_colors, "v_colors", DEV, 4);
    avatar::bind::check_shape(v_colors, "v_colors", {d.B, d.C, d.N, 3});
    auto v_coeffs = torch::empty_like(coeffs), v_means = torch::empty_like(means);
    torch::Tensor v_viewmats = camera_grad ? torch::empty_like(viewmats) : torch::Tensor();
    avatar::cpu::sh_backward(d.B, d.C, d.N, d.K, (int)degree, coeffs.data_ptr<float>(), means.data_ptr<float>(),
                             viewmats.data_ptr<float>(), v_colors.data_ptr<float>(), v_coeffs.data_ptr<float>(),
                             v_means.data_ptr<float>(), avatar::bind::ptr_or_null(v_viewmats));
    return {v_coeffs, v_means, v_viewmats};
}

torch::Tensor to_tensor(const std::vector<int32_t>& v) {
    auto t = torch::empty({(int64_t)v.size()}, torch::TensorOptions().dtype(torch::kInt32));
    if (!v.empty()) std::memcpy(t.data_ptr<int32_t>(), v.data(), v.size() * sizeof(int32_t));
    return t;
}

// means2d [I,N,2], conics [I,N,3], features [I,N,D], opacities [I,N], radii [I,N,2], depths [I,N]
// -> render [I,H,W,D], alphas [I,H,W,1], last [I,H,W] int32, tile_offsets [I*T+1], tile_ids [M]
std::vector<torch::Tensor> raster_fwd(torch::Tensor means2d, torch::Tensor conics, torch::Tensor features,
                                      torch::Tensor opacities, torch::Tensor radii, torch::Tensor depths,
                                      int64_t width, int64_t height) {
    auto d = avatar::bind::raster_dims(DEV, means2d, conics, features, opacities);
    avatar::bind::check_binning(DEV, d, radii, depths);
    auto f = features.options();
    auto render = torch::empty({d.I, height, width, d.D}, f);
    auto alphas = torch::empty({d.I, height, width, 1}, f);
    auto last = torch::empty({d.I, height, width}, f.dtype(torch::kInt32));
    std::vector<int32_t> offsets, ids;
    avatar::cpu::raster_forward(d.I, d.N, d.D, (int)width, (int)height, means2d.data_ptr<float>(),
                                conics.data_ptr<float>(), features.data_ptr<float>(), opacities.data_ptr<float>(),
                                radii.data_ptr<int32_t>(), depths.data_ptr<float>(), offsets, ids,
                                render.data_ptr<float>(), alphas.data_ptr<float>(), last.data_ptr<int32_t>());
    return {render, alphas, last, to_tensor(offsets), to_tensor(ids)};
}

// -> v_means2d [I,N,2], v_conics [I,N,3], v_features [I,N,D], v_opacities [I,N]
std::vector<torch::Tensor> raster_bwd(torch::Tensor means2d, torch::Tensor conics, torch::Tensor features,
                                      torch::Tensor opacities, torch::Tensor tile_offsets, torch::Tensor tile_ids,
                                      torch::Tensor alphas, torch::Tensor last, torch::Tensor v_render,
                                      torch::Tensor v_alphas, int64_t width, int64_t height) {
    auto d = avatar::bind::raster_dims(DEV, means2d, conics, features, opacities);
    avatar::bind::check_raster_grads(DEV, d, width, height, tile_offsets, tile_ids, alphas, last, v_render, v_alphas);
    auto v_means2d = torch::empty_like(means2d), v_conics = torch::empty_like(conics);
    auto v_features = torch::empty_like(features), v_opacities = torch::empty_like(opacities);
    avatar::cpu::raster_backward(d.I, d.N, d.D, (int)width, (int)height, means2d.data_ptr<float>(),
                                 conics.data_ptr<float>(), features.data_ptr<float>(), opacities.data_ptr<float>(),
                                 tile_offsets.data_ptr<int32_t>(), tile_ids.data_ptr<int32_t>(),
                                 alphas.data_ptr<float>(), last.data_ptr<int32_t>(), v_render.data_ptr<float>(),
                                 v_alphas.data_ptr<float>(), v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
                                 v_features.data_ptr<float>(), v_opacities.data_ptr<float>());
    return {v_means2d, v_conics, v_features, v_opacities};
}

// x [N,P,2] (in [0,1]), tables [P,T,F], per-level lists of length L -> out [N,P,L*F]
torch::Tensor hashgrid_fwd(torch::Tensor x, torch::Tensor tables, std::vector<double> scales,
                           std::vector<int64_t> res, std::vector<int64_t> sizes, std::vector<int64_t> offsets,
                           std::vector<int64_t> dense) {
    auto lv = avatar::bind::hashgrid_levels(DEV, x, tables, scales, res, sizes, offsets, dense);
    auto out = torch::empty({x.size(0), x.size(1), (int64_t)lv.L * lv.F}, x.options());
    avatar::cpu::hashgrid_forward(x.size(0), (int)x.size(1), lv, x.data_ptr<float>(), tables.data_ptr<float>(),
                                  out.data_ptr<float>());
    return out;
}

// grad_out [N,P,L*F] -> grad_tables [P,T,F], grad_x [N,P,2] (undefined -> None unless x_grad)
std::vector<torch::Tensor> hashgrid_bwd(torch::Tensor x, torch::Tensor tables, std::vector<double> scales,
                                        std::vector<int64_t> res, std::vector<int64_t> sizes,
                                        std::vector<int64_t> offsets, std::vector<int64_t> dense,
                                        torch::Tensor grad_out, bool x_grad) {
    auto lv = avatar::bind::hashgrid_levels(DEV, x, tables, scales, res, sizes, offsets, dense);
    avatar::bind::check_hashgrid_grad(DEV, x, lv, grad_out);
    auto grad_tables = torch::empty_like(tables);
    torch::Tensor grad_x = x_grad ? torch::empty_like(x) : torch::Tensor();
    avatar::cpu::hashgrid_backward(x.size(0), (int)x.size(1), lv, x.data_ptr<float>(), tables.data_ptr<float>(),
                                   grad_out.data_ptr<float>(), grad_tables.data_ptr<float>(),
                                   avatar::bind::ptr_or_null(grad_x));
    return {grad_tables, grad_x};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "avatar rasterizer, CPU twin of the CUDA kernels (OpenMP)";
    m.def("project_fwd", &project_fwd);
    m.def("project_bwd", &project_bwd);
    m.def("sh_fwd", &sh_fwd);
    m.def("sh_bwd", &sh_bwd);
    m.def("raster_fwd", &raster_fwd);
    m.def("raster_bwd", &raster_bwd);
    m.def("hashgrid_fwd", &hashgrid_fwd);
    m.def("hashgrid_bwd", &hashgrid_bwd);
}
