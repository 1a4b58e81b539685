"""GPU checks (skip without CUDA): our `cuda` backend against the torch reference (tight, same
math: the tolerances of the CPU twin's tests, a little looser for --use_fast_math) and against
gsplat (loose: same opacity-aware per-axis extents, but gsplat's own op order and fast-math)."""
import pytest
import torch

from avatar.ops import backends, rasterize
from _raster_scenes import camera, gaussians

pytestmark = pytest.mark.gpu

NAMES = ("means", "quats", "scales", "opacities", "colors")


def _run(backend, g, vm, K, W, H, bg, **kw):
    dev = torch.device("cuda")
    leaves = {k: g[k].to(dev).clone().requires_grad_(True) for k in NAMES}
    bgl = None if bg is None else bg.to(dev).clone().requires_grad_(True)
    vml = vm.to(dev).clone().requires_grad_(True)
    img, alpha, meta = rasterize(*(leaves[k] for k in NAMES), vml, K.to(dev), W, H,
                                 backgrounds=bgl, backend=backend, **kw)
    gen = torch.Generator().manual_seed(0)
    v_img = torch.randn(img.shape, generator=gen).to(dev)
    v_alpha = torch.randn(alpha.shape, generator=gen).to(dev)
    ((img * v_img).sum() + (alpha * v_alpha).sum()).backward()
    grads = {k: leaves[k].grad for k in NAMES}
    grads["means2d"] = meta["means2d"].grad
    grads["viewmats"] = vml.grad
    if bgl is not None:
        grads["backgrounds"] = bgl.grad
    return img, alpha, meta, grads


def _close_grad(name, a, b, rel=1e-3, frac=2e-4):
    scale = float(b.abs().max())
    err = (a - b).abs() - (rel * b.abs() + frac * scale)
    assert float(err.max()) <= 0, f"{name}: max diff {float((a - b).abs().max()):.3g} (scale {scale:.3g})"


# feature channels: 3 (RGB), 4 (RGB+ED), 1 (D) take the register/shared-memory kernels, 6 the generic one
@pytest.mark.parametrize("batch,C,deg,D,mode,rmode", [
    ((), 1, None, 3, "RGB", "classic"),
    ((2,), 2, 3, 3, "RGB+ED", "antialiased"),
    ((), 2, 1, 3, "D", "classic"),
    ((), 2, None, 6, "RGB", "antialiased"),
])
def test_cuda_matches_torch(batch, C, deg, D, mode, rmode):
    if not backends()["cuda"][0]:
        pytest.skip(backends()["cuda"][1])
    W, H, N = 64, 48, 400
    K = 0 if deg is None else (deg + 1) ** 2
    g = gaussians(batch, N, K=K, D=D, seed=2, spread=0.35, scale=0.03)
    vm, Ks = camera(C, W, H)
    vm = vm.expand(*batch, C, 4, 4).contiguous()
    Ks = Ks.expand(*batch, C, 3, 3).contiguous()
    bg = None if mode == "D" else torch.rand(*batch, C, D)
    kw = dict(sh_degree=deg, render_mode=mode, rasterize_mode=rmode)
    i0, a0, m0, g0 = _run("torch", g, vm, Ks, W, H, bg, **kw)
    i1, a1, m1, g1 = _run("cuda", g, vm, Ks, W, H, bg, **kw)
    assert m1["backend"] == "cuda"
    # extents are ceil(...) of a fast-math log: an exact tie may round the other way, nothing more
    r0, r1 = m0["radii"].cpu(), m1["radii"].cpu()
    assert int((r1 - r0).abs().max()) <= 1 and float((r1 != r0).float().mean()) < 5e-3
    assert torch.equal(r0 > 0, r1 > 0)
    # --use_fast_math (expf, division) -> slightly looser than the cpu twin
    torch.testing.assert_close(a1, a0, rtol=0, atol=1e-4)
    torch.testing.assert_close(i1, i0, rtol=1e-4, atol=1e-4)
    for k in g0:
        if g0[k] is None:
            assert g1[k] is None
            continue
        _close_grad(k, g1[k], g0[k], rel=5e-3, frac=1e-3)


def test_cuda_matches_gsplat():
    av = backends()
    if not (av["cuda"][0] and av["gsplat"][0]):
        pytest.skip(f"cuda: {av['cuda'][1]}; gsplat: {av['gsplat'][1]}")
    W, H, N = 128, 96, 2000
    g = gaussians((), N, K=16, seed=5, spread=0.3, scale=0.02)
    vm, Ks = camera(2, W, H)
    bg = torch.rand(2, 3)
    i0, a0, m0, g0 = _run("gsplat", g, vm, Ks, W, H, bg, sh_degree=3, render_mode="RGB+ED")
    i1, a1, m1, g1 = _run("cuda", g, vm, Ks, W, H, bg, sh_degree=3, render_mode="RGB+ED")
    assert m0["backend"] == "gsplat"
    vis = (m0["radii"] > 0) & (m1["radii"] > 0)             # culled entries are unspecified
    assert int(vis.sum()) > N                                   # most of 2 x N are visible
    torch.testing.assert_close(m1["means2d"][vis], m0["means2d"][vis], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(m1["depths"][vis], m0["depths"][vis], rtol=1e-5, atol=1e-5)
    d = (i1[..., :3] - i0[..., :3]).abs()
    assert float(d.max()) < 2e-2 and float(d.mean()) < 1e-3
    assert float((a1 - a0).abs().mean()) < 1e-3
    for k in ("colors", "opacities", "means"):
        cos = torch.nn.functional.cosine_similarity(g1[k].flatten(), g0[k].flatten(), dim=0)
        assert float(cos) > 0.99, k


def test_cuda_camera_gradient_only_when_requested():
    if not backends()["cuda"][0]:
        pytest.skip(backends()["cuda"][1])
    dev = torch.device("cuda")
    g = {k: v.to(dev) for k, v in gaussians((2,), 3000, K=4, seed=5, spread=0.3, scale=0.02).items()}
    vm, Ks = camera(2, 96, 64)
    vm, Ks = vm.expand(2, 2, 4, 4).contiguous().to(dev), Ks.expand(2, 2, 3, 3).contiguous().to(dev)
    out = {}
    for want in (False, True):
        leaves = {k: g[k].clone().requires_grad_(True) for k in NAMES}
        vml = vm.clone().requires_grad_(want)
        img, alpha, _ = rasterize(*(leaves[k] for k in NAMES), vml, Ks, 96, 64, sh_degree=1, backend="cuda")
        (img.square().sum() + alpha.sum()).backward()
        out[want] = ({k: leaves[k].grad for k in NAMES}, vml.grad)
    assert out[False][1] is None and float(out[True][1].abs().max()) > 0
    for k in NAMES:            # equal up to atomic summation order
        torch.testing.assert_close(out[False][0][k], out[True][0][k], rtol=1e-4, atol=1e-6)
    # the block-reduced camera gradient equals the torch reference's autograd one
    leaves = {k: g[k].clone().requires_grad_(True) for k in NAMES}
    vml = vm.clone().requires_grad_(True)
    img, alpha, _ = rasterize(*(leaves[k] for k in NAMES), vml, Ks, 96, 64, sh_degree=1, backend="torch")
    (img.square().sum() + alpha.sum()).backward()
    _close_grad("viewmats", out[True][1], vml.grad, rel=5e-3, frac=1e-3)
