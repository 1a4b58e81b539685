"""The `cpu` backend (C++/OpenMP twin of the CUDA kernels) against the torch reference, forward and
backward (means, quats, scales, opacities, colours/SH, backgrounds, viewmats, means2d), with the
same random output gradients pushed through both.

Tolerances: colours/alphas abs 2e-5 (expected depth abs 1e-4, it is divided by alpha); gradients
elementwise |cpu - torch| <= 1e-3 * |torch| + 2e-4 * max|torch grad| (float32 summation-order
noise is ~1e-5 relative; a wrong term in a derivative is O(1) relative).
"""
import pytest
import torch

from avatar.ops import backends, rasterize
from _raster_scenes import camera, gaussians

pytestmark = pytest.mark.skipif(not backends()["cpu"][0], reason=f"cpu backend: {backends()['cpu'][1]}")

NAMES = ("means", "quats", "scales", "opacities", "colors")


def _render(backend, g, vm, K, W, H, bg, seed, **kw):
    leaves = {k: g[k].clone().requires_grad_(True) for k in NAMES}
    bgl = None if bg is None else bg.clone().requires_grad_(True)
    vml = vm.clone().requires_grad_(True)
    img, alpha, meta = rasterize(*(leaves[k] for k in NAMES), vml, K, W, H, backgrounds=bgl,
                                 backend=backend, **kw)
    assert meta["backend"] == backend
    gen = torch.Generator().manual_seed(seed)
    v_img = torch.randn(img.shape, generator=gen)
    v_alpha = torch.randn(alpha.shape, generator=gen)
    ((img * v_img).sum() + (alpha * v_alpha).sum()).backward()
    grads = {k: leaves[k].grad for k in NAMES}
    grads["means2d"] = meta["means2d"].grad
    grads["viewmats"] = vml.grad
    if bgl is not None:
        grads["backgrounds"] = bgl.grad
    return img, alpha, meta, grads


def _close_grad(name, a, b):
    assert a is not None and b is not None, name
    scale = float(b.abs().max()) if b.numel() else 0.0
    assert scale > 0 or b.numel() == 0, f"{name}: reference gradient is all zero (test scene too weak)"
    err = (a - b).abs() - (1e-3 * b.abs() + 2e-4 * scale)
    assert float(err.max()) <= 0, f"{name}: max |cpu - torch| = {float((a - b).abs().max()):.3g}, scale {scale:.3g}"


CASES = [
    # batch, C, sh_degree, background, render_mode, rasterize_mode
    ((), 1, None, False, "RGB", "classic"),
    ((), 2, 0, True, "RGB", "classic"),
    ((2,), 1, 1, False, "RGB+ED", "antialiased"),
    ((2,), 2, 2, True, "RGB+ED", "classic"),
    ((2, 1), 2, 3, True, "RGB+ED", "antialiased"),
    ((), 2, 3, False, "D", "classic"),
    ((), 1, None, False, "ED", "antialiased"),
    ((2,), 2, None, True, "RGB+D", "classic"),
]


@pytest.mark.parametrize("batch,C,deg,with_bg,mode,rmode", CASES)
def test_cpu_matches_torch(batch, C, deg, with_bg, mode, rmode):
    W, H, N = 36, 30, 140
    K = 0 if deg is None else (deg + 1) ** 2 + 1       # K > (deg+1)^2: extra coefficients are ignored
    g = gaussians(batch, N, K=K, D=3, seed=len(batch) * 10 + C + (deg or 0), spread=0.35, scale=0.03)
    vm, Ks = camera(C, W, H)
    vm = vm.expand(*batch, C, 4, 4).contiguous()
    Ks = Ks.expand(*batch, C, 3, 3).contiguous()
    bg = torch.rand(*batch, C, 3) if with_bg else None
    kw = dict(sh_degree=deg, render_mode=mode, rasterize_mode=rmode)
    i0, a0, m0, g0 = _render("torch", g, vm, Ks, W, H, bg, seed=7, **kw)
    i1, a1, m1, g1 = _render("cpu", g, vm, Ks, W, H, bg, seed=7, **kw)
    assert torch.equal(m0["radii"], m1["radii"])
    assert int((m0["radii"] > 0).sum()) > N // 2                 # the scene is mostly visible
    torch.testing.assert_close(m1["means2d"], m0["means2d"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(m1["depths"], m0["depths"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a1, a0, rtol=0, atol=2e-5)
    ncol = 0 if mode in ("D", "ED") else 3
    torch.testing.assert_close(i1[..., :ncol], i0[..., :ncol], rtol=0, atol=2e-5)
    if mode != "RGB":
        torch.testing.assert_close(i1[..., ncol:], i0[..., ncol:], rtol=1e-5, atol=1e-4)
    assert float(a0.detach().max()) > 0.6                         # opaque regions exercise T
    for k in g0:
        if k == "colors" and mode in ("D", "ED"):
            assert g0[k] is None and g1[k] is None                 # colours are not rendered
            continue
        _close_grad(k, g1[k], g0[k])


def test_cpu_early_stop_and_clamp_match_torch():
    # dense, opaque stack: many pixels terminate early (T <= 1e-4) and hit the 0.99 alpha clamp
    W, H, N = 32, 32, 120
    g = gaussians((), N, seed=11, spread=0.08, scale=0.05)
    g["opacities"] = 0.6 + 0.4 * torch.rand(N, generator=torch.Generator().manual_seed(3))
    vm, Ks = camera(1, W, H)
    i0, a0, m0, g0 = _render("torch", g, vm, Ks, W, H, None, seed=1)
    i1, a1, m1, g1 = _render("cpu", g, vm, Ks, W, H, None, seed=1)
    assert float(a0.detach().max()) > 1 - 2e-4                              # some pixels reached T ~ 1e-4
    torch.testing.assert_close(i1, i0, rtol=0, atol=2e-5)
    torch.testing.assert_close(a1, a0, rtol=0, atol=2e-5)
    for k in g0:
        _close_grad(k, g1[k], g0[k])


def test_cpu_degenerate_inputs_no_nan_and_empty():
    g = gaussians((), 48, seed=3)
    g["means"][:6, 2] = -5.0
    g["means"][6:12, 0] = 30.0
    g["scales"][12:18] = 0.0
    g["quats"][18:22] = 0.0
    vm, Ks = camera(2, 24, 20)
    img, alpha, meta, grads = _render("cpu", g, vm, Ks, 24, 20, torch.rand(2, 3), seed=0,
                                      render_mode="RGB+ED", rasterize_mode="antialiased")
    assert torch.isfinite(img).all() and torch.isfinite(alpha).all()
    for k, v in grads.items():
        assert torch.isfinite(v).all(), k
    z = torch.zeros
    bg = torch.tensor([[0.2, 0.4, 0.6]])
    img, alpha, meta = rasterize(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, 3), vm[:1], Ks[:1], 24, 20,
                                 backgrounds=bg, backend="cpu")
    torch.testing.assert_close(img, bg[:, None, None].expand(1, 20, 24, 3))
    assert float(alpha.abs().max()) == 0.0


def test_auto_prefers_cpu_for_float32_cpu_tensors():
    g = gaussians((), 8)
    vm, Ks = camera(1, 16, 16)
    _, _, meta = rasterize(*(g[k] for k in NAMES), vm, Ks, 16, 16)
    assert meta["backend"] == "cpu"
    _, _, meta = rasterize(*(g[k].double() for k in NAMES), vm.double(), Ks.double(), 16, 16)
    assert meta["backend"] == "torch"                              # native backends are float32
    with pytest.raises(ValueError, match="needs float32 CPU tensors"):
        rasterize(*(g[k].double() for k in NAMES), vm.double(), Ks.double(), 16, 16, backend="cpu")


def test_intrinsics_gradients_only_on_torch():
    g = gaussians((), 8)
    vm, Ks = camera(1, 16, 16)
    Ks.requires_grad_(True)
    with pytest.raises(ValueError, match="does not differentiate w.r.t. intrinsics"):
        rasterize(*(g[k] for k in NAMES), vm, Ks, 16, 16, backend="cpu")
    with pytest.warns(UserWarning, match="torch reference"):
        img, _, meta = rasterize(*(g[k] for k in NAMES), vm, Ks, 16, 16)
    assert meta["backend"] == "torch"
    img.sum().backward()
    assert Ks.grad is not None and torch.isfinite(Ks.grad).all()
    with torch.no_grad():                                            # no grad wanted: native is fine
        _, _, meta = rasterize(*(g[k] for k in NAMES), vm, Ks, 16, 16)
    assert meta["backend"] == "cpu"


def test_cpu_camera_gradient_only_when_requested():
    """viewmats that do not require grad get none (the kernels skip that work), and the other
    gradients are the same as when the camera gradient is computed."""
    g = gaussians((), 80, K=4, seed=5, spread=0.3, scale=0.04)
    vm, Ks = camera(2, 32, 24)
    out = {}
    for want in (False, True):
        leaves = {k: g[k].clone().requires_grad_(True) for k in NAMES}
        vml = vm.clone().requires_grad_(want)
        img, alpha, _ = rasterize(*(leaves[k] for k in NAMES), vml, Ks, 32, 24, sh_degree=1, backend="cpu")
        (img.square().sum() + alpha.sum()).backward()
        out[want] = ({k: leaves[k].grad for k in NAMES}, vml.grad)
    assert out[False][1] is None and out[True][1] is not None and float(out[True][1].abs().max()) > 0
    for k in NAMES:        # equal up to OpenMP summation order (tiles are scheduled dynamically)
        torch.testing.assert_close(out[False][0][k], out[True][0][k], rtol=1e-5, atol=1e-6)
