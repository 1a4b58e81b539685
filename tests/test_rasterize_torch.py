"""The torch reference rasterizer: analytic renders, gradcheck, robustness, input validation."""
import math

import pytest
import torch

from avatar.ops import rasterize
from _raster_scenes import camera, gaussians


def _single(opacity=0.8, sigma_world=0.05, z=1.0, f=100.0, W=33, H=33, eps2d=0.0, mode="classic"):
    means = torch.zeros(1, 3)
    quats = torch.tensor([[0.3, 0.0, 0.0, 0.0]])     # unnormalised identity rotation
    scales = torch.full((1, 3), sigma_world)
    opac = torch.tensor([opacity])
    colors = torch.tensor([[1.0, 0.5, 0.25]])
    vm = torch.eye(4)[None]
    vm[0, 2, 3] = z
    K = torch.tensor([[[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]])
    return rasterize(means, quats, scales, opac, colors, vm, K, W, H, eps2d=eps2d,
                     rasterize_mode=mode, backend="torch")


def test_single_gaussian_analytic():
    # frontal isotropic Gaussian at depth 1, f=100, sigma 0.05 -> projected sigma 5 px, centred on
    # pixel (16,16)'s centre (16.5, 16.5): centre value = opacity * color exactly (eps2d=0).
    img, alpha, meta = _single()
    assert meta["backend"] == "torch"
    torch.testing.assert_close(img[0, 16, 16], torch.tensor([0.8, 0.4, 0.2]), rtol=0, atol=1e-6)
    assert alpha[0, 16, 16, 0].item() == pytest.approx(0.8, abs=1e-6)
    # falloff along a row: opacity * exp(-0.5 d^2 / sigma^2), sigma = f * s / z = 5 px
    for d in (1, 3, 5, 8, 10):
        want = 0.8 * math.exp(-0.5 * d * d / 25.0)
        if want < 1 / 255:
            want = 0.0
        assert img[0, 16, 16 + d, 0].item() == pytest.approx(want, abs=1e-6), d
        assert img[0, 16 - d, 16, 0].item() == pytest.approx(want, abs=1e-6), d
    # opacity-aware extent: alpha >= 1/255 within sqrt(2 log(255 o)) sigma = 16.3 px of the centre
    assert meta["radii"][0, 0].item() == math.ceil(math.sqrt(2 * math.log(255 * 0.8) * 25))
    torch.testing.assert_close(meta["means2d"][0, 0], torch.tensor([16.5, 16.5]))
    assert meta["depths"][0, 0].item() == pytest.approx(1.0)


def test_single_gaussian_low_pass_and_antialiased():
    img, _, _ = _single(eps2d=0.3)
    s2 = 25.0 + 0.3
    assert img[0, 16, 19, 0].item() == pytest.approx(0.8 * math.exp(-0.5 * 9 / s2), abs=1e-6)
    img_aa, _, _ = _single(eps2d=0.3, mode="antialiased")
    comp = math.sqrt(25.0 * 25.0 / (s2 * s2))
    assert img_aa[0, 16, 16, 0].item() == pytest.approx(0.8 * comp, abs=1e-6)


def test_occlusion_order_and_early_stop():
    # four frontal Gaussians of opacity 0.95 centred on pixel (8,8): composited nearest first,
    # and compositing stops before the one that would bring T to <= 1e-4 (T: .05, .0025,
    # 1.25e-4, then 6.25e-6 -> the farthest is never blended).
    N = 4
    means = torch.zeros(N, 3)
    means[:, 2] = torch.tensor([0.3, 0.0, 0.1, 0.2])
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(N, 1)
    scales = torch.full((N, 3), 0.2)
    opac = torch.full((N,), 0.95)
    colors = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]])
    vm = torch.eye(4)[None]
    vm[0, 2, 3] = 1.0
    K = torch.tensor([[[50.0, 0, 8.5], [0, 50.0, 8.5], [0, 0, 1]]])
    img, alpha, _ = rasterize(means, quats, scales, opac, colors, vm, K, 16, 16, eps2d=0.0, backend="torch")
    want = 0.95 * colors[1] + 0.05 * 0.95 * colors[2] + 0.0025 * 0.95 * colors[3]
    torch.testing.assert_close(img[0, 8, 8], want, rtol=0, atol=1e-6)
    assert alpha[0, 8, 8, 0].item() == pytest.approx(1 - 1.25e-4, abs=1e-6)
    # alpha clamp at 0.99: a single opaque Gaussian leaves T = 0.01
    img1, alpha1, _ = rasterize(means[:1], quats[:1], scales[:1], torch.ones(1), colors[:1], vm, K, 16, 16,
                                eps2d=0.0, backend="torch")
    assert alpha1[0, 8, 8, 0].item() == pytest.approx(0.99, abs=1e-6)


def test_empty_returns_background():
    vm, K = camera(2, 20, 12)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    z = torch.zeros
    img, alpha, meta = rasterize(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, 3), vm, K, 20, 12,
                                 backgrounds=bg, backend="torch")
    assert img.shape == (2, 12, 20, 3) and alpha.shape == (2, 12, 20, 1)
    torch.testing.assert_close(img, bg[:, None, None, :].expand_as(img))
    assert float(alpha.abs().max()) == 0.0
    assert meta["means2d"].shape == (2, 0, 2) and meta["radii"].shape == (2, 0)


def test_degenerate_and_offscreen_give_no_nan():
    g = gaussians((), 64, seed=3)
    g["means"][:8, 2] = -5.0                  # far behind the camera (camera at z=-2 in world)
    g["means"][8:16, 2] = -1.995              # inside the near plane
    g["means"][16:24, 0] = 40.0               # far outside the image
    g["scales"][24:32] = 0.0                  # fully degenerate
    g["scales"][32:40, 0] = 0.0               # flat
    g["quats"][40:44] = 0.0                   # zero quaternion -> identity
    for k in g:
        g[k].requires_grad_(True)
    vm, K = camera(2, 32, 24)
    for mode in ("classic", "antialiased"):
        img, alpha, meta = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"],
                                     vm, K, 32, 24, render_mode="RGB+ED", rasterize_mode=mode,
                                     backend="torch")
        assert torch.isfinite(img).all() and torch.isfinite(alpha).all()
        (img.sum() + alpha.sum()).backward()
        for k, v in g.items():
            assert torch.isfinite(v.grad).all(), (mode, k)
            v.grad = None
        assert (meta["radii"][:, :16] == 0).all() and (meta["radii"][:, 16:24] == 0).all()


def test_gradcheck_float64():
    g = gaussians((), 5, K=4, seed=1, spread=0.15, scale=0.08, dtype=torch.float64)
    vm, K = camera(2, 10, 8, dtype=torch.float64)
    bg = torch.rand(2, 3, dtype=torch.float64)
    names = ("means", "quats", "scales", "opacities", "colors")
    inputs = tuple(g[k].clone().requires_grad_(True) for k in names) + (bg.requires_grad_(True),)

    def f(means, quats, scales, opacities, colors, bgs):
        img, alpha, _ = rasterize(means, quats, scales, opacities, colors, vm, K, 10, 8,
                                  sh_degree=1, backgrounds=bgs, render_mode="RGB+ED",
                                  rasterize_mode="antialiased", backend="torch")
        return img, alpha

    # fast mode checks J^T v against finite differences along random directions u, v: a wrong
    # derivative term still fails it, at a fraction of the cost of building the full Jacobian
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_means2d_grad_is_filled_and_batch_dims():
    g = gaussians((2, 1), 30, seed=4)
    vm, K = camera(2, 16, 16)
    vm = vm.expand(2, 1, 2, 4, 4)
    K = K.expand(2, 1, 2, 3, 3)
    means = g["means"].requires_grad_(True)
    img, alpha, meta = rasterize(means, g["quats"], g["scales"], g["opacities"], g["colors"], vm, K,
                                 16, 16, backend="torch")
    assert img.shape == (2, 1, 2, 16, 16, 3) and meta["means2d"].shape == (2, 1, 2, 30, 2)
    img.sum().backward()
    assert meta["means2d"].grad is not None and meta["means2d"].grad.abs().sum() > 0
    # batch entries are independent renders
    img0, _, _ = rasterize(g["means"][0, 0], g["quats"][0, 0], g["scales"][0, 0], g["opacities"][0, 0],
                           g["colors"][0, 0], vm[0, 0], K[0, 0], 16, 16, backend="torch")
    torch.testing.assert_close(img[0, 0], img0, rtol=0, atol=1e-6)


def _args(**over):
    g = gaussians((), 4)
    vm, K = camera(1, 8, 8)
    a = dict(means=g["means"], quats=g["quats"], scales=g["scales"], opacities=g["opacities"],
             colors=g["colors"], viewmats=vm, Ks=K, width=8, height=8)
    a.update(over)
    return a


@pytest.mark.parametrize("over,needle", [
    (dict(means=torch.zeros(4, 2)), "`means` must have shape [..., N, 3]"),
    (dict(quats=torch.zeros(4, 3)), "`quats` must have shape [4, 4]"),
    (dict(scales=torch.zeros(5, 3)), "`scales` must have shape [4, 3]"),
    (dict(opacities=torch.zeros(4, 1)), "`opacities` must have shape [4]"),
    (dict(colors=torch.zeros(3, 3)), "`colors` must have shape [4, D]"),
    (dict(viewmats=torch.zeros(1, 3, 4)), "`viewmats` must have shape [C, 4, 4]"),
    (dict(Ks=torch.zeros(2, 3, 3)), "`Ks` must have shape [1, 3, 3]"),
    (dict(means=torch.zeros(4, 3, dtype=torch.float16)), "`means` must be float32 or float64"),
    (dict(quats=torch.zeros(4, 4, dtype=torch.float64)), "`quats` has dtype torch.float64"),
    (dict(means=torch.tensor([[float("nan"), 0, 0]] * 4)), "`means` contains 4 non-finite"),
    (dict(colors=torch.full((4, 3), float("inf"))), "`colors` contains 12 non-finite"),
    (dict(scales=-torch.ones(4, 3)), "`scales` must be linear scales >= 0"),
    (dict(opacities=torch.full((4,), 1.5)), "`opacities` must lie in [0, 1]"),
    (dict(width=0), "`width` must be a positive int"),
    (dict(height=8.0), "`height` must be a positive int"),
    (dict(sh_degree=2, colors=torch.zeros(4, 4, 3)), "with K >= 9 for sh_degree=2"),
    (dict(backgrounds=torch.zeros(1, 4)), "`backgrounds` must have shape [1, 3]"),
    (dict(render_mode="RGBD"), "`render_mode` must be one of"),
    (dict(rasterize_mode="mip"), "`rasterize_mode` must be one of"),
    (dict(backend="vulkan"), "`backend` must be one of"),
    (dict(near_plane=0.0), "near_plane"),
])
def test_bad_inputs_raise_valueerror(over, needle):
    with pytest.raises(ValueError) as e:
        rasterize(**_args(**over))
    assert needle in str(e.value)


def test_unavailable_backend_names_the_fix():
    from avatar.ops import backends
    av = backends()
    assert set(av) == {"cuda", "gsplat", "cpu", "torch"} and av["torch"][0]
    if not torch.cuda.is_available():
        assert not av["cuda"][0] and av["cuda"][1]
        with pytest.raises(ValueError, match="needs float32 CUDA tensors"):
            rasterize(**_args(), backend="cuda")


def test_import_loads_no_native_module():
    import subprocess
    import sys

    code = ("import sys, avatar, avatar.ops; avatar.ops.backends(); "
            "print(sorted(m for m in sys.modules if m.startswith('avatar._C') or m.startswith('avatar_C')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_missing_backend_requested_explicitly_names_the_fix(monkeypatch):
    from avatar.ops import BackendUnavailable, _backends

    monkeypatch.setattr(_backends, "_cpu_status", lambda: (False, "avatar._C_cpu not built; " + _backends.FIX))
    with pytest.raises(BackendUnavailable, match="make setup"):
        rasterize(**_args(), backend="cpu")
    _, _, meta = rasterize(**_args())                   # auto falls through to the reference
    assert meta["backend"] == "torch"


def test_failed_native_build_is_remembered_and_auto_falls_back(monkeypatch):
    """A failing JIT compile: `auto` warns once naming the cause and uses the next backend; the
    compile is not retried on later calls; an explicit request raises the same one-line reason."""
    from avatar.ops import BackendUnavailable, _native, backends

    calls = []

    def broken_jit(kind, srcs):
        calls.append(kind)
        raise RuntimeError("Error building extension 'avatar_C_cpu'\nc++: simulated compiler failure")

    monkeypatch.setattr(_native, "_LOADER", _native._Loader())          # a fresh process' state
    monkeypatch.setattr(_native, "_prebuilt_is_stale", lambda kind, srcs: True)   # take the JIT path
    monkeypatch.setattr(_native, "_jit", broken_jit)
    import warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")            # Python's default: once per call site
        for _ in range(3):                          # e.g. a render loop
            _, _, meta = rasterize(**_args())
            assert meta["backend"] == "torch"
    said = [str(w.message) for w in seen if "unavailable" in str(w.message)]
    assert said == ["rasterize: backend 'cpu' unavailable (could not JIT-compile avatar._C_cpu (RuntimeError: "
                    "c++: simulated compiler failure); run `make setup` (builds avatar._C_cpu, and "
                    "avatar._C_cuda on a CUDA machine)); using 'torch' instead"], said
    assert calls == ["cpu"]                         # compiled once, not on every call
    ok, why = backends()["cpu"]
    assert not ok and "simulated compiler failure" in why and "\n" not in why
    with pytest.raises(BackendUnavailable, match="simulated compiler failure"):
        rasterize(**_args(), backend="cpu")
    assert calls == ["cpu"]


def test_opacity_aware_extent_changes_no_pixel():
    """The per-axis opacity-aware tile extent bounds every pixel where a splat's alpha reaches 1/255:
    compositing with unbounded extents (every visible splat in every tile) gives the same image,
    while a box one pixel smaller than a splat's extent would clip it."""
    from avatar.ops import _torch_impl as T

    g = gaussians((), 300, seed=8, spread=0.3, scale=0.04)
    g["opacities"][:100] = 1.0                       # the largest extents: sqrt(2 log 255) = 3.33 sigma
    vm, K = camera(1, 64, 48)
    means2d, conics, depths, radii, opac = T.project(g["means"][None], g["quats"][None], g["scales"][None],
                                                     g["opacities"][None], vm[None], K[None], 64, 48,
                                                     0.01, 1e10, 0.3, False)
    args = (means2d[0], conics[0], g["colors"][None], opac[0])
    img, alpha = T.rasterize_pixels(*args, radii[0], depths[0], 64, 48)
    huge = torch.where(radii[0] > 0, torch.full_like(radii[0], 10_000), radii[0])
    img_u, alpha_u = T.rasterize_pixels(*args, huge, depths[0], 64, 48)
    assert int((radii > 0).sum()) > 200
    torch.testing.assert_close(img, img_u, rtol=0, atol=1e-6)
    torch.testing.assert_close(alpha, alpha_u, rtol=0, atol=1e-6)
    # ... and the extent is needed: shrinking every box by 2 px changes the image
    smaller = torch.where(radii[0] > 2, radii[0] - 2, radii[0])
    img_s, _ = T.rasterize_pixels(*args, smaller, depths[0], 64, 48)
    assert float((img_s - img).abs().max()) > 1e-3
