"""HashTriplane: the torch reference lookup, and the tinycudann implementation against it."""

import pytest
import torch

from avatar.model.config import TriplaneConfig
from avatar.model.triplane import HashTriplane, level_layout, tcnn_available


def _cfg(**kw):
    base = dict(n_levels=4, n_features_per_level=2, log2_hashmap_size=8, base_resolution=4,
                per_level_scale=2.0, bound=(-1.0, -1.0, -1.0, 1.0, 1.0, 1.0))
    base.update(kw)
    return TriplaneConfig(**base)


def test_layout_dense_then_hashed():
    lay = level_layout(_cfg())
    # scales 3, 7, 15, 31 -> resolutions 4, 8, 16, 32 -> 16, 64, 256 dense; 1024 > 256 hashed
    assert [r for _, r, _, _ in lay] == [4, 8, 16, 32]
    assert [d for _, _, _, d in lay] == [True, True, True, False]
    assert [s for _, _, s, _ in lay] == [16, 64, 256, 256]


def test_bilinear_reproduces_linear_function_on_dense_levels():
    """With table entries set to a linear function of the grid corner, bilinear lookup is exact."""
    cfg = _cfg(n_levels=2, n_features_per_level=1)
    tp = HashTriplane(cfg)
    with torch.no_grad():
        for lvl, (scale, res, size, dense) in enumerate(tp.layout):
            idx = torch.arange(res * res)
            gx, gy = idx % res, idx // res
            # value at corner (gx, gy) = 0.3*gx/scale + 0.7*gy/scale, i.e. linear in the input uv
            vals = 0.3 * (gx.float() - 0.5) / scale + 0.7 * (gy.float() - 0.5) / scale
            tp.tables[:, tp.offsets[lvl]:tp.offsets[lvl] + res * res, 0] = vals
    # tiny-cuda-nn's dense grids have ceil(scale)+1 vertices per side but positions reach scale+0.5, so
    # the last half cell reads a wrapped neighbour (same in tcnn); test inside u <= 0.8
    x = torch.rand(100, 3) * 1.6 - 1.0
    u = (x + 1) / 2
    f = tp(x)  # [100, 3 planes * 2 levels]
    assert f.shape == (100, 6) and tp.out_dim == 6
    for p, (a, b) in enumerate(((0, 1), (1, 2), (0, 2))):
        want = 0.3 * u[:, a] + 0.7 * u[:, b]
        for lvl in range(2):
            assert torch.allclose(f[:, p * 2 + lvl], want, atol=1e-5)


def test_continuous_differentiable_and_sum_mode():
    tp = HashTriplane(_cfg())
    with torch.no_grad():
        tp.tables.normal_()
    x = torch.rand(50, 3, requires_grad=True)
    f = tp(x)
    f2 = tp(x + 1e-4)
    assert (f - f2).abs().max() < 0.2  # continuous across cells (hash levels are too)
    f.square().sum().backward()
    assert tp.tables.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    ts = HashTriplane(_cfg(combine="sum"))
    assert ts(x).shape == (50, ts.out_dim) and ts.out_dim == 8


def test_outside_bound_is_clamped():
    tp = HashTriplane(_cfg())
    with torch.no_grad():
        tp.tables.normal_()
    assert torch.allclose(tp(torch.tensor([[5.0, 5.0, 5.0]])), tp(torch.tensor([[1.0, 1.0, 1.0]])))


@pytest.mark.gpu
def test_tcnn_matches_torch():
    ok, why = tcnn_available()
    if not ok:
        pytest.skip(why)
    cfg = _cfg(log2_hashmap_size=10)
    ref = HashTriplane(cfg).cuda()
    with torch.no_grad():
        ref.tables.uniform_(-1, 1)
    fast = HashTriplane(TriplaneConfig(**{**cfg.__dict__, "impl": "tcnn"})).cuda()
    with torch.no_grad():
        fast.tables.copy_(ref.tables)
    x = torch.rand(4096, 3, device="cuda") * 1.9 - 0.95
    a, b = ref(x), fast(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    assert torch.allclose(ref.tables.grad, fast.tables.grad, atol=1e-4)


def test_tcnn_unavailable_is_a_clear_error():
    ok, why = tcnn_available()
    if ok:
        pytest.skip("tinycudann present")
    with pytest.raises(RuntimeError, match="impl='torch'"):
        HashTriplane(_cfg(impl="tcnn"))
    from avatar.ops import hashgrid

    auto = HashTriplane(_cfg(impl="auto"))  # never tcnn here: our native kernel when built, else torch
    assert auto.impl == ("native" if hashgrid.native_status(torch.device("cpu"))[0] else "torch")
