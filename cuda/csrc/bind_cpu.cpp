// Torch glue for the CPU twin (avatar._C_cpu): checks, allocation, pointer passing. All math is in
// cuda/include/avatar/*.h and cuda/csrc/cpu/*.cpp.
#include <torch/extension.h>

#include <vector>

#include "avatar/cpu.h"

namespace {

void check(const torch::Tensor& t, const char* name, c10::ScalarType dtype = torch::kFloat32) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.scalar_type() == dtype, name, " has the wrong dtype");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

avatar::cpu::Geometry geometry(const torch::Tensor& means, const torch::Tensor& viewmats, int64_t width,
                               int64_t height, double near_plane, double far_plane, double eps2d,
                               bool antialiased) {
    avatar::cpu::Geometry g;
    g.B = (int)means.size(0);
    g.N = (int)means.size(1);
    g.C = (int)viewmats.size(1);
    g.width = (int)width;
    g.height = (int)height;
    g.near_plane = (float)near_plane;
    g.far_plane = (float)far_plane;
    g.eps2d = (float)eps2d;
    g.antialiased = antialiased;
    return g;
}

// means [B,N,3], quats [B,N,4], scales [B,N,3], opacities [B,N], viewmats [B,C,4,4], Ks [B,C,3,3]
// -> means2d [B,C,N,2], conics [B,C,N,3], depths [B,C,N], radii [B,C,N] int32, opacities [B,C,N]
std::vector<torch::Tensor> project_fwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double near_plane, double far_plane,
                                       double eps2d, bool antialiased) {
    for (auto& p : {std::make_pair(&means, "means"), std::make_pair(&quats, "quats"),
                    std::make_pair(&scales, "scales"), std::make_pair(&opacities, "opacities"),
                    std::make_pair(&viewmats, "viewmats"), std::make_pair(&Ks, "Ks")})
        check(*p.first, p.second);
    auto g = geometry(means, viewmats, width, height, near_plane, far_plane, eps2d, antialiased);
    auto f = means.options();
    auto means2d = torch::empty({g.B, g.C, g.N, 2}, f);
    auto conics = torch::empty({g.B, g.C, g.N, 3}, f);
    auto depths = torch::empty({g.B, g.C, g.N}, f);
    auto radii = torch::empty({g.B, g.C, g.N}, f.dtype(torch::kInt32));
    auto opac = torch::empty({g.B, g.C, g.N}, f);
    avatar::cpu::project_forward(g, means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(),
                                 opacities.data_ptr<float>(), viewmats.data_ptr<float>(), Ks.data_ptr<float>(),
                                 means2d.data_ptr<float>(), conics.data_ptr<float>(), depths.data_ptr<float>(),
                                 radii.data_ptr<int32_t>(), opac.data_ptr<float>());
    return {means2d, conics, depths, radii, opac};
}

// -> v_means [B,N,3], v_quats [B,N,4], v_scales [B,N,3], v_opacities [B,N], v_viewmats [B,C,4,4]
std::vector<torch::Tensor> project_bwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double near_plane, double far_plane,
                                       double eps2d, bool antialiased, torch::Tensor v_means2d,
                                       torch::Tensor v_conics, torch::Tensor v_depths, torch::Tensor v_opac) {
    check(v_means2d, "v_means2d");
    check(v_conics, "v_conics");
    check(v_depths, "v_depths");
    check(v_opac, "v_opacities");
    auto g = geometry(means, viewmats, width, height, near_plane, far_plane, eps2d, antialiased);
    auto v_means = torch::empty_like(means), v_quats = torch::empty_like(quats);
    auto v_scales = torch::empty_like(scales), v_opacities = torch::empty_like(opacities);
    auto v_viewmats = torch::empty_like(viewmats);
    avatar::cpu::project_backward(g, means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(),
                                  opacities.data_ptr<float>(), viewmats.data_ptr<float>(), Ks.data_ptr<float>(),
                                  v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(), v_depths.data_ptr<float>(),
                                  v_opac.data_ptr<float>(), v_means.data_ptr<float>(), v_quats.data_ptr<float>(),
                                  v_scales.data_ptr<float>(), v_opacities.data_ptr<float>(),
                                  v_viewmats.data_ptr<float>());
    return {v_means, v_quats, v_scales, v_opacities, v_viewmats};
}

// coeffs [B,N,K,3], means [B,N,3], viewmats [B,C,4,4] -> colors [B,C,N,3]
torch::Tensor sh_fwd(int64_t degree, torch::Tensor coeffs, torch::Tensor means, torch::Tensor viewmats) {
    check(coeffs, "coeffs");
    check(means, "means");
    check(viewmats, "viewmats");
    int B = (int)means.size(0), N = (int)means.size(1), C = (int)viewmats.size(1), K = (int)coeffs.size(2);
    auto colors = torch::empty({B, C, N, 3}, means.options());
    avatar::cpu::sh_forward(B, C, N, K, (int)degree, coeffs.data_ptr<float>(), means.data_ptr<float>(),
                            viewmats.data_ptr<float>(), colors.data_ptr<float>());
    return colors;
}

// -> v_coeffs [B,N,K,3], v_means [B,N,3], v_viewmats [B,C,4,4]
std::vector<torch::Tensor> sh_bwd(int64_t degree, torch::Tensor coeffs, torch::Tensor means,
                                  torch::Tensor viewmats, torch::Tensor v_colors) {
    check(v_colors, "v_colors");
    int B = (int)means.size(0), N = (int)means.size(1), C = (int)viewmats.size(1), K = (int)coeffs.size(2);
    auto v_coeffs = torch::empty_like(coeffs), v_means = torch::empty_like(means);
    auto v_viewmats = torch::empty_like(viewmats);
    avatar::cpu::sh_backward(B, C, N, K, (int)degree, coeffs.data_ptr<float>(), means.data_ptr<float>(),
                             viewmats.data_ptr<float>(), v_colors.data_ptr<float>(), v_coeffs.data_ptr<float>(),
                             v_means.data_ptr<float>(), v_viewmats.data_ptr<float>());
    return {v_coeffs, v_means, v_viewmats};
}

torch::Tensor to_tensor(const std::vector<int32_t>& v) {
    auto t = torch::empty({(int64_t)v.size()}, torch::TensorOptions().dtype(torch::kInt32));
    if (!v.empty()) std::memcpy(t.data_ptr<int32_t>(), v.data(), v.size() * sizeof(int32_t));
    return t;
}

// means2d [I,N,2], conics [I,N,3], features [I,N,D], opacities [I,N], radii [I,N], depths [I,N]
// -> render [I,H,W,D], alphas [I,H,W,1], last [I,H,W] int32, tile_offsets [I*T+1], tile_ids [M]
std::vector<torch::Tensor> raster_fwd(torch::Tensor means2d, torch::Tensor conics, torch::Tensor features,
                                      torch::Tensor opacities, torch::Tensor radii, torch::Tensor depths,
                                      int64_t width, int64_t height) {
    check(means2d, "means2d");
    check(conics, "conics");
    check(features, "features");
    check(opacities, "opacities");
    check(radii, "radii", torch::kInt32);
    check(depths, "depths");
    int I = (int)means2d.size(0), N = (int)means2d.size(1), D = (int)features.size(2);
    auto f = features.options();
    auto render = torch::empty({I, height, width, D}, f);
    auto alphas = torch::empty({I, height, width, 1}, f);
    auto last = torch::empty({I, height, width}, f.dtype(torch::kInt32));
    std::vector<int32_t> offsets, ids;
    avatar::cpu::raster_forward(I, N, D, (int)width, (int)height, means2d.data_ptr<float>(),
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
    check(v_render, "v_render");
    check(v_alphas, "v_alphas");
    check(tile_offsets, "tile_offsets", torch::kInt32);
    check(tile_ids, "tile_ids", torch::kInt32);
    int I = (int)means2d.size(0), N = (int)means2d.size(1), D = (int)features.size(2);
    auto v_means2d = torch::empty_like(means2d), v_conics = torch::empty_like(conics);
    auto v_features = torch::empty_like(features), v_opacities = torch::empty_like(opacities);
    avatar::cpu::raster_backward(I, N, D, (int)width, (int)height, means2d.data_ptr<float>(),
                                 conics.data_ptr<float>(), features.data_ptr<float>(), opacities.data_ptr<float>(),
                                 tile_offsets.data_ptr<int32_t>(), tile_ids.data_ptr<int32_t>(),
                                 alphas.data_ptr<float>(), last.data_ptr<int32_t>(), v_render.data_ptr<float>(),
                                 v_alphas.data_ptr<float>(), v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
                                 v_features.data_ptr<float>(), v_opacities.data_ptr<float>());
    return {v_means2d, v_conics, v_features, v_opacities};
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
}
