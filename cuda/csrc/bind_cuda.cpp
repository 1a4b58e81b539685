// Torch glue for the CUDA rasterizer (avatar._C_cuda): checks, allocation, the (tile, depth) key
// sort (torch's radix sort on the device), pointer passing. Kernels live in csrc/cuda/*.cu and
// include no torch headers.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

#include "avatar/cuda.h"

namespace {

constexpr int TILE = 16;

void check(const torch::Tensor& t, const char* name, c10::ScalarType dtype = torch::kFloat32) {
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(t.scalar_type() == dtype, name, " has the wrong dtype");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

avatar::cuda::Geometry geometry(const torch::Tensor& means, const torch::Tensor& viewmats, int64_t width,
                                int64_t height, double near_plane, double far_plane, double eps2d,
                                bool antialiased) {
    avatar::cuda::Geometry g;
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

std::vector<torch::Tensor> project_fwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double near_plane, double far_plane,
                                       double eps2d, bool antialiased) {
    for (auto& p : {std::make_pair(&means, "means"), std::make_pair(&quats, "quats"),
                    std::make_pair(&scales, "scales"), std::make_pair(&opacities, "opacities"),
                    std::make_pair(&viewmats, "viewmats"), std::make_pair(&Ks, "Ks")})
        check(*p.first, p.second);
    const c10::cuda::CUDAGuard guard(means.device());
    auto g = geometry(means, viewmats, width, height, near_plane, far_plane, eps2d, antialiased);
    auto f = means.options();
    auto means2d = torch::empty({g.B, g.C, g.N, 2}, f);
    auto conics = torch::empty({g.B, g.C, g.N, 3}, f);
    auto depths = torch::empty({g.B, g.C, g.N}, f);
    auto radii = torch::empty({g.B, g.C, g.N}, f.dtype(torch::kInt32));
    auto opac = torch::empty({g.B, g.C, g.N}, f);
    avatar::cuda::project_forward(g, means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(),
                                  opacities.data_ptr<float>(), viewmats.data_ptr<float>(), Ks.data_ptr<float>(),
                                  means2d.data_ptr<float>(), conics.data_ptr<float>(), depths.data_ptr<float>(),
                                  radii.data_ptr<int32_t>(), opac.data_ptr<float>(), stream());
    return {means2d, conics, depths, radii, opac};
}

std::vector<torch::Tensor> project_bwd(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                       torch::Tensor opacities, torch::Tensor viewmats, torch::Tensor Ks,
                                       int64_t width, int64_t height, double near_plane, double far_plane,
                                       double eps2d, bool antialiased, torch::Tensor v_means2d,
                                       torch::Tensor v_conics, torch::Tensor v_depths, torch::Tensor v_opac) {
    check(v_means2d, "v_means2d");
    check(v_conics, "v_conics");
    check(v_depths, "v_depths");
    check(v_opac, "v_opacities");
    const c10::cuda::CUDAGuard guard(means.device());
    auto g = geometry(means, viewmats, width, height, near_plane, far_plane, eps2d, antialiased);
    auto v_means = torch::empty_like(means), v_quats = torch::empty_like(quats);
    auto v_scales = torch::empty_like(scales), v_opacities = torch::empty_like(opacities);
    auto v_viewmats = torch::zeros_like(viewmats);
    avatar::cuda::project_backward(g, means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(),
                                   opacities.data_ptr<float>(), viewmats.data_ptr<float>(), Ks.data_ptr<float>(),
                                   v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
                                   v_depths.data_ptr<float>(), v_opac.data_ptr<float>(), v_means.data_ptr<float>(),
                                   v_quats.data_ptr<float>(), v_scales.data_ptr<float>(),
                                   v_opacities.data_ptr<float>(), v_viewmats.data_ptr<float>(), stream());
    return {v_means, v_quats, v_scales, v_opacities, v_viewmats};
}

torch::Tensor sh_fwd(int64_t degree, torch::Tensor coeffs, torch::Tensor means, torch::Tensor viewmats) {
    check(coeffs, "coeffs");
    check(means, "means");
    check(viewmats, "viewmats");
    const c10::cuda::CUDAGuard guard(means.device());
    int B = (int)means.size(0), N = (int)means.size(1), C = (int)viewmats.size(1), K = (int)coeffs.size(2);
    auto colors = torch::empty({B, C, N, 3}, means.options());
    avatar::cuda::sh_forward(B, C, N, K, (int)degree, coeffs.data_ptr<float>(), means.data_ptr<float>(),
                             viewmats.data_ptr<float>(), colors.data_ptr<float>(), stream());
    return colors;
}

std::vector<torch::Tensor> sh_bwd(int64_t degree, torch::Tensor coeffs, torch::Tensor means,
                                  torch::Tensor viewmats, torch::Tensor v_colors) {
    check(v_colors, "v_colors");
    const c10::cuda::CUDAGuard guard(means.device());
    int B = (int)means.size(0), N = (int)means.size(1), C = (int)viewmats.size(1), K = (int)coeffs.size(2);
    auto v_coeffs = torch::empty_like(coeffs), v_means = torch::empty_like(means);
    auto v_viewmats = torch::zeros_like(viewmats);
    avatar::cuda::sh_backward(B, C, N, K, (int)degree, coeffs.data_ptr<float>(), means.data_ptr<float>(),
                              viewmats.data_ptr<float>(), v_colors.data_ptr<float>(), v_coeffs.data_ptr<float>(),
                              v_means.data_ptr<float>(), v_viewmats.data_ptr<float>(), stream());
    return {v_coeffs, v_means, v_viewmats};
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
    const c10::cuda::CUDAGuard guard(means2d.device());
    int I = (int)means2d.size(0), N = (int)means2d.size(1), D = (int)features.size(2);
    TORCH_CHECK(D <= avatar::cuda::MAX_CHANNELS, "the cuda backend renders at most ",
                avatar::cuda::MAX_CHANNELS, " channels, got ", D);
    int tiles_x = ((int)width + TILE - 1) / TILE, tiles_y = ((int)height + TILE - 1) / TILE;
    int64_t num_tiles = (int64_t)I * tiles_x * tiles_y;
    TORCH_CHECK(num_tiles < (int64_t(1) << 31), "too many (image, tile) pairs for 32-bit tile keys");
    auto f = features.options();
    auto i32 = f.dtype(torch::kInt32);
    auto counts = torch::empty({(int64_t)I * N}, i32);
    avatar::cuda::tile_counts(I, N, (int)width, (int)height, means2d.data_ptr<float>(), radii.data_ptr<int32_t>(),
                              counts.data_ptr<int32_t>(), stream());
    auto ends = torch::cumsum(counts, 0, torch::kInt64);
    int64_t M = ends.numel() ? ends[-1].item<int64_t>() : 0;
    TORCH_CHECK(M < (int64_t(1) << 31), "too many (splat, tile) intersections: ", M);
    auto offsets = ends - counts.to(torch::kInt64);
    auto keys = torch::empty({M}, f.dtype(torch::kInt64));
    auto values = torch::empty({M}, i32);
    avatar::cuda::tile_emit(I, N, (int)width, (int)height, means2d.data_ptr<float>(), radii.data_ptr<int32_t>(),
                            depths.data_ptr<float>(), offsets.data_ptr<int64_t>(), keys.data_ptr<int64_t>(),
                            values.data_ptr<int32_t>(), stream());
    // (tile, depth) sort; stable, so equal depths keep splat-index order like the CPU twin
    auto sorted = torch::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    auto sorted_keys = std::get<0>(sorted).contiguous();
    auto tile_ids = values.index_select(0, std::get<1>(sorted)).contiguous();
    auto tile_offsets = torch::empty({num_tiles + 1}, i32);
    avatar::cuda::tile_ranges(M, (int)num_tiles, sorted_keys.data_ptr<int64_t>(), tile_offsets.data_ptr<int32_t>(),
                              stream());
    auto render = torch::empty({I, height, width, D}, f);
    auto alphas = torch::empty({I, height, width, 1}, f);
    auto last = torch::empty({I, height, width}, i32);
    avatar::cuda::raster_forward(I, N, D, (int)width, (int)height, means2d.data_ptr<float>(),
                                 conics.data_ptr<float>(), features.data_ptr<float>(), opacities.data_ptr<float>(),
                                 tile_offsets.data_ptr<int32_t>(), tile_ids.data_ptr<int32_t>(),
                                 render.data_ptr<float>(), alphas.data_ptr<float>(), last.data_ptr<int32_t>(),
                                 stream());
    return {render, alphas, last, tile_offsets, tile_ids};
}

std::vector<torch::Tensor> raster_bwd(torch::Tensor means2d, torch::Tensor conics, torch::Tensor features,
                                      torch::Tensor opacities, torch::Tensor tile_offsets, torch::Tensor tile_ids,
                                      torch::Tensor alphas, torch::Tensor last, torch::Tensor v_render,
                                      torch::Tensor v_alphas, int64_t width, int64_t height) {
    check(v_render, "v_render");
    check(v_alphas, "v_alphas");
    check(tile_offsets, "tile_offsets", torch::kInt32);
    check(tile_ids, "tile_ids", torch::kInt32);
    const c10::cuda::CUDAGuard guard(means2d.device());
    int I = (int)means2d.size(0), N = (int)means2d.size(1), D = (int)features.size(2);
    auto v_means2d = torch::zeros_like(means2d), v_conics = torch::zeros_like(conics);
    auto v_features = torch::zeros_like(features), v_opacities = torch::zeros_like(opacities);
    avatar::cuda::raster_backward(I, N, D, (int)width, (int)height, means2d.data_ptr<float>(),
                                  conics.data_ptr<float>(), features.data_ptr<float>(),
                                  opacities.data_ptr<float>(), tile_offsets.data_ptr<int32_t>(),
                                  tile_ids.data_ptr<int32_t>(), alphas.data_ptr<float>(), last.data_ptr<int32_t>(),
                                  v_render.data_ptr<float>(), v_alphas.data_ptr<float>(),
                                  v_means2d.data_ptr<float>(), v_conics.data_ptr<float>(),
                                  v_features.data_ptr<float>(), v_opacities.data_ptr<float>(), stream());
    return {v_means2d, v_conics, v_features, v_opacities};
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
}
