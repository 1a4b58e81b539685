"""Our 2D hash-grid kernel (avatar.ops.hashgrid; cuda/include/avatar/hashgrid.h) against the torch
reference (HashTriplane.encode_plane / hash_encode_torch), forward and backward (tables and input
coordinates), on random points, points on cell borders and the box corners, dense and hashed levels.

Tolerances: outputs abs 1e-6 (a few float32 roundings of values ~1). Gradients elementwise
|native - torch| <= 1e-4 * |torch| + 1e-5 * max|torch grad| (only the summation order differs; a
wrong term is O(1) relative). Table gradients on CPU are deterministic (bitwise equal on reruns).

`python tests/test_hashgrid.py --bench` measures native CPU vs torch (fwd+bwd, same inputs, side by
side in one run) and writes summary.cpu_vs_torch_hashgrid_speedup_fwd_bwd into
benchmarks/results/rasterize.json.
"""
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from avatar.model.config import TriplaneConfig
from avatar.model.triplane import PLANES, HashTriplane, level_layout
from avatar.ops import BackendUnavailable
from avatar.ops.hashgrid import hash_encode, hash_encode_torch, native_status

CPU_OK, CPU_WHY = native_status(torch.device("cpu"))
needs_cpu = pytest.mark.skipif(not CPU_OK, reason=f"native cpu hash grid: {CPU_WHY}")


def _cfg(**kw):
    base = dict(n_levels=5, n_features_per_level=2, log2_hashmap_size=8, base_resolution=4,
                per_level_scale=2.0, bound=(-1.0, -1.0, -1.0, 1.0, 1.0, 1.0))
    base.update(kw)
    return TriplaneConfig(**base)


def _close_grad(name, a, b):
    assert a is not None and b is not None, name
    scale = float(b.abs().max())
    assert scale > 0, f"{name}: reference gradient is all zero"
    err = (a - b).abs() - (1e-4 * b.abs() + 1e-5 * scale)
    assert float(err.max()) <= 0, f"{name}: max |native - torch| = {float((a - b).abs().max()):.3g}, scale {scale:.3g}"


def _points(layout, n, gen):
    """Random uv in [0,1]^2, plus points on every level's cell borders and the unit square's corners."""
    pts = [torch.rand(n, 2, generator=gen)]
    for scale, _, _, _ in layout:
        k = torch.arange(0, int(scale) + 2, dtype=torch.float32)
        border = ((k - 0.5) / scale).clamp(0, 1)           # pos = uv * scale + 0.5 is (about) an integer
        other = torch.rand(border.numel(), generator=gen)
        pts += [torch.stack([border, other], 1), torch.stack([other, border], 1)]
    pts.append(torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]))
    return torch.cat(pts)


LAYOUTS = [
    dict(),                                                   # 3 dense levels, 2 hashed
    dict(n_levels=3, n_features_per_level=1, log2_hashmap_size=12, base_resolution=3, per_level_scale=1.7),
    dict(n_levels=6, n_features_per_level=4, log2_hashmap_size=6, base_resolution=2, per_level_scale=1.5),
    dict(n_levels=4, n_features_per_level=3, log2_hashmap_size=7, base_resolution=5, per_level_scale=2.5),
    dict(n_levels=2, n_features_per_level=8, log2_hashmap_size=9, base_resolution=16, per_level_scale=1.3),
]


def test_layouts_cover_dense_and_hashed():
    kinds = {d for kw in LAYOUTS for _, _, _, d in level_layout(_cfg(**kw))}
    assert kinds == {True, False}


def _run(backend, x, tables, layout, g):
    xl = x.clone().requires_grad_(True)
    tl = tables.clone().requires_grad_(True)
    out = hash_encode(xl, tl, layout, backend=backend)
    (out * g).sum().backward()
    return out.detach(), tl.grad, xl.grad


@needs_cpu
@pytest.mark.parametrize("kw", LAYOUTS)
def test_cpu_matches_torch_single_plane(kw):
    cfg = _cfg(**kw)
    tp = HashTriplane(TriplaneConfig(**{**cfg.__dict__, "impl": "torch"}))
    layout = tp.layout
    gen = torch.Generator().manual_seed(1)
    x = _points(layout, 3000, gen)
    table = torch.rand(tp.offsets[-1], cfg.n_features_per_level, generator=gen) * 2 - 1
    with torch.no_grad():
        tp.tables[0].copy_(table)
        ref_model = tp.encode_plane(x, 0)                    # the model's reference lookup
    g = torch.randn(ref_model.shape, generator=gen)
    out, g_tab, g_x = _run("cpu", x, table, layout, g)
    ref, r_tab, r_x = _run("torch", x, table, layout, g)
    assert out.shape == (x.shape[0], cfg.n_levels * cfg.n_features_per_level)
    assert torch.allclose(ref, ref_model, atol=1e-7, rtol=0)
    assert torch.allclose(out, ref, atol=1e-6, rtol=0), (out - ref).abs().max()
    _close_grad("tables", g_tab, r_tab)
    _close_grad("x", g_x, r_x)


@needs_cpu
def test_cpu_multi_plane_and_determinism():
    cfg = _cfg()
    layout = level_layout(cfg)
    T = sum(s for _, _, s, _ in layout) + 5                    # spare rows stay untouched (grad 0)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4000, 3, 2, generator=gen)
    tables = torch.randn(3, T, cfg.n_features_per_level, generator=gen)
    g = torch.randn(4000, 3, cfg.n_levels * cfg.n_features_per_level, generator=gen)
    out, g_tab, g_x = _run("cpu", x, tables, layout, g)
    ref, r_tab, r_x = _run("torch", x, tables, layout, g)
    assert torch.allclose(out, ref, atol=1e-6, rtol=0)
    _close_grad("tables", g_tab, r_tab)
    _close_grad("x", g_x, r_x)
    assert float(g_tab[:, -5:].abs().max()) == 0.0
    out2, g_tab2, g_x2 = _run("cpu", x, tables, layout, g)
    assert torch.equal(out, out2) and torch.equal(g_tab, g_tab2) and torch.equal(g_x, g_x2)


@needs_cpu
def test_tables_only_gradient_and_empty_input():
    layout = level_layout(_cfg())
    T = sum(s for _, _, s, _ in layout)
    tables = torch.randn(T, 2, requires_grad=True)
    out = hash_encode(torch.rand(100, 2), tables, layout, backend="cpu")
    out.sum().backward()
    assert tables.grad is not None and float(tables.grad.abs().sum()) > 0
    empty = hash_encode(torch.zeros(0, 2), tables, layout, backend="cpu")
    assert empty.shape == (0, len(layout) * 2)


@needs_cpu
@pytest.mark.parametrize("combine", ["concat", "sum"])
def test_hashtriplane_native_equals_torch(combine):
    cfg = _cfg(combine=combine, n_levels=6, log2_hashmap_size=9)
    ref = HashTriplane(TriplaneConfig(**{**cfg.__dict__, "impl": "torch"}))
    nat = HashTriplane(TriplaneConfig(**{**cfg.__dict__, "impl": "native"}))
    assert nat.impl == "native" and ref.impl == "torch"
    with torch.no_grad():
        ref.tables.uniform_(-1, 1)
        nat.tables.copy_(ref.tables)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3000, 3, generator=gen) * 2.4 - 1.2           # some outside the bound (clamped)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    a, b = nat(xs[0]), ref(xs[1])
    assert a.shape == b.shape == (3000, nat.out_dim)
    assert torch.allclose(a, b, atol=1e-6, rtol=0), (a - b).abs().max()
    g = torch.randn(a.shape, generator=gen)
    (a * g).sum().backward()
    (b * g).sum().backward()
    _close_grad("tables", nat.tables.grad, ref.tables.grad)
    _close_grad("x", xs[0].grad, xs[1].grad)


@needs_cpu
def test_auto_picks_native_and_backend_errors():
    tp = HashTriplane(_cfg(impl="auto"))
    assert tp.impl_for(torch.device("cpu")) == "native"
    layout = level_layout(_cfg())
    tables = torch.randn(sum(s for _, _, s, _ in layout), 2)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        hash_encode(torch.rand(4, 2), tables, layout, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        hash_encode(torch.rand(4, 2), tables, layout, backend="gsplat")
    with pytest.raises(ValueError, match="rows"):
        hash_encode(torch.rand(4, 2), tables[:10], layout, backend="cpu")
    # float64 on auto falls back to the reference
    out = hash_encode(torch.rand(4, 2, dtype=torch.float64), tables.double(), layout)
    assert out.shape == (4, len(layout) * 2)


def test_torch_reference_matches_encode_plane_any_build():
    cfg = _cfg()
    tp = HashTriplane(TriplaneConfig(**{**cfg.__dict__, "impl": "torch"}))
    x = torch.rand(500, 3)
    u = tp.normalize(x)
    uv = u[:, [list(ab) for ab in PLANES]]
    with torch.no_grad():
        ref = torch.cat([tp.encode_plane(u[:, list(ab)], p) for p, ab in enumerate(PLANES)], -1)
        out = hash_encode_torch(uv, tp.tables, tp.layout).reshape(500, -1)
    assert torch.equal(out, ref)


@pytest.mark.gpu
@pytest.mark.parametrize("kw", LAYOUTS[:3])
def test_cuda_matches_cpu_and_torch(kw):
    ok, why = native_status(torch.device("cuda"))
    if not ok:
        pytest.skip(f"native cuda hash grid: {why}")
    cfg = _cfg(**kw)
    layout = level_layout(cfg)
    T = sum(s for _, _, s, _ in layout)
    gen = torch.Generator().manual_seed(4)
    x = torch.stack([_points(layout, 20000, gen) for _ in range(3)], 1)     # [N,3,2]
    tables = torch.rand(3, T, cfg.n_features_per_level, generator=gen) * 2 - 1
    g = torch.randn(x.shape[0], 3, cfg.n_levels * cfg.n_features_per_level, generator=gen)
    dev = torch.device("cuda")
    out, g_tab, g_x = _run("cuda", x.to(dev), tables.to(dev), layout, g.to(dev))
    ref, r_tab, r_x = _run("torch", x, tables, layout, g)
    assert torch.allclose(out.cpu(), ref, atol=1e-6, rtol=0), (out.cpu() - ref).abs().max()
    _close_grad("tables", g_tab.cpu(), r_tab)
    _close_grad("x", g_x.cpu(), r_x)
    if CPU_OK:
        c_out, c_tab, c_x = _run("cpu", x, tables, layout, g)
        assert torch.allclose(out.cpu(), c_out, atol=1e-6, rtol=0)
        _close_grad("tables cuda vs cpu", g_tab.cpu(), c_tab)
        _close_grad("x cuda vs cpu", g_x.cpu(), c_x)
    tp = HashTriplane(TriplaneConfig(**{**cfg.__dict__, "impl": "auto"})).cuda()
    assert tp.impl_for(dev) == "native"
    ref_tp = HashTriplane(TriplaneConfig(**{**cfg.__dict__, "impl": "torch"})).cuda()
    with torch.no_grad():
        ref_tp.tables.copy_(tp.tables)
    xx = torch.rand(5000, 3, device=dev) * 2 - 1
    assert torch.allclose(tp(xx), ref_tp(xx), atol=1e-6, rtol=0)


def bench(n_points=100_000, repeats=5, out_json=None):
    """Native CPU vs the torch reference, HashTriplane (default config: 8 levels x 2 features, 3
    planes, 2^14 rows) forward + backward on the same points, side by side in one process."""
    cfg = TriplaneConfig(impl="torch")
    ref = HashTriplane(cfg)
    nat = HashTriplane(TriplaneConfig(**{**cfg.__dict__, "impl": "native"}))
    with torch.no_grad():
        nat.tables.copy_(ref.tables)
    lo, hi = torch.tensor(cfg.bound[:3]), torch.tensor(cfg.bound[3:])
    x = torch.rand(n_points, 3, generator=torch.Generator().manual_seed(0)) * (hi - lo) + lo
    g = torch.randn(n_points, ref.out_dim, generator=torch.Generator().manual_seed(1))

    def step(model):
        xl = x.clone().requires_grad_(True)
        model.tables.grad = None
        (model(xl) * g).sum().backward()

    times = {}
    for name, model in (("native", nat), ("torch", ref)):
        step(model)                                   # warm-up (and extension load)
    for _ in range(repeats):                          # interleaved: same load for both
        for name, model in (("native", nat), ("torch", ref)):
            t0 = time.perf_counter()
            step(model)
            times.setdefault(name, []).append(time.perf_counter() - t0)
    best = {k: min(v) * 1e3 for k, v in times.items()}
    speedup = round(best["torch"] / best["native"], 2)
    print(f"hashgrid fwd+bwd, {n_points} points, torch threads {torch.get_num_threads()}: "
          f"native {best['native']:.2f} ms, torch {best['torch']:.2f} ms -> speedup {speedup}x")
    if out_json:
        path = Path(out_json)
        data = json.loads(path.read_text())
        data.setdefault("summary", {})["cpu_vs_torch_hashgrid_speedup_fwd_bwd"] = speedup
        path.write_text(json.dumps(data, indent=2) + "\n")
    return speedup, best


if __name__ == "__main__" and "--bench" in sys.argv:
    bench(out_json=Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "rasterize.json")
