"""Densify/prune resize every per-Gaussian tensor (params, labels, Adam moments, strategy state) in lock-step."""
import torch

from avatar.model.gaussians import Gaussians
from avatar.model.strategy import DensifyStrategy, StrategyConfig, duplicate, remove, reset_opacity, split_gaussians


def _setup(n=10):
    torch.manual_seed(0)
    means = torch.randn(n, 3) * 0.05
    labels = torch.arange(n) % 5
    g = Gaussians(means, labels, scale=0.004)
    with torch.no_grad():
        g.params["colors"].copy_(torch.arange(n).float()[:, None].repeat(1, 3))  # colour = identity tag
    opt = torch.optim.Adam([{"name": k, "params": [p]} for k, p in g.params.items()], lr=1e-3)
    loss = sum((p ** 2).sum() for p in g.params.values())
    loss.backward()
    opt.step()
    strat = DensifyStrategy(StrategyConfig())
    state = strat.initialize_state(n)
    state["grad2d"] += torch.arange(n).float()
    state["count"] += 1
    return g, opt, strat, state


def _check_lockstep(g, opt, state):
    n = len(g)
    assert g.labels.shape == (n,)
    for name, p in g.params.items():
        assert p.shape[0] == n, name
        group = [gr for gr in opt.param_groups if gr["name"] == name][0]
        assert group["params"][0] is p, name  # the optimizer optimises the new tensor
        st = opt.state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape, name
    assert len(opt.state) == len(g.params)  # no stale state for replaced tensors
    for k, v in state.items():
        assert v.shape[0] == n, k
    tag = g.params["colors"][:, 0].round().long()
    assert torch.equal(g.labels, tag % 5)  # labels travelled with their Gaussians


def test_duplicate_split_remove_keep_everything_in_lockstep():
    g, opt, strat, state = _setup()
    avg_before = opt.state[g.params["means"]]["exp_avg"].clone()
    duplicate(g, opt, state, torch.tensor([1, 0, 0, 1, 0, 0, 0, 0, 0, 1], dtype=torch.bool))
    assert len(g) == 13
    _check_lockstep(g, opt, state)
    assert torch.equal(opt.state[g.params["means"]]["exp_avg"][:10], avg_before)
    assert (opt.state[g.params["means"]]["exp_avg"][10:] == 0).all()
    assert torch.equal(g.params["means"][10:], g.params["means"][[0, 3, 9]])
    split = torch.zeros(13, dtype=torch.bool)
    split[[2, 11]] = True
    scale_before = g.params["log_scales"][[2, 11]].detach().clone()
    split_gaussians(g, opt, state, split, torch.Generator().manual_seed(0))
    assert len(g) == 15
    _check_lockstep(g, opt, state)
    assert torch.allclose(g.params["log_scales"][-4:], (scale_before - torch.log(torch.tensor(1.6))).repeat(2, 1))
    prune = torch.zeros(15, dtype=torch.bool)
    prune[[0, 5, 14]] = True
    remove(g, opt, state, prune)
    assert len(g) == 12
    _check_lockstep(g, opt, state)
    # the optimizer still works on the resized tensors
    loss = sum((p ** 2).sum() for p in g.params.values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    _check_lockstep(g, opt, state)


def test_policy_densifies_high_gradient_and_prunes_transparent():
    g, opt, strat, state = _setup(20)
    strat.cfg.grad_threshold = 10.5  # grad2d = index -> Gaussians 11..19 are candidates
    strat.cfg.max_gaussians = 25     # room for 5: the 5 largest gradients (15..19)
    with torch.no_grad():
        g.params["opacities"][0] = -10.0  # transparent -> pruned
    n0 = len(g)
    out = strat.densify_and_prune(g, opt, state)
    assert out["cloned"] + out["split"] == 5 and out["pruned"] == 1
    assert len(g) == n0 + 5 - 1
    _check_lockstep(g, opt, state)
    tags = sorted(g.params["colors"][:, 0].round().long().tolist())
    assert tags.count(0) == 0 and all(tags.count(t) == 2 for t in range(15, 20))


def test_reset_opacity_caps_and_clears_moments():
    g, opt, strat, state = _setup()
    reset_opacity(g, opt, 0.01)
    assert (torch.sigmoid(g.params["opacities"]) <= 0.01 + 1e-6).all()
    assert (opt.state[g.params["opacities"]]["exp_avg"] == 0).all()
    _check_lockstep(g, opt, state)
