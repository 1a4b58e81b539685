"""Speaker augmentation of the prior's training windows (avatar.prior.augment) and the ensemble of
networks (MotionPriorConfig.members): known answers, determinism, exact resume, a loss that falls."""
import pytest
import torch

from avatar.prior.augment import augment_feats, resample_frames, stretch_rate, warp_mel
from avatar.prior.config import MotionPriorConfig
from avatar.prior.model import MotionPrior, PriorEnsemble
from avatar.prior.trainer import _collate, sample_global_batch, train_prior

from tests.test_prior_train import AUDIO, SPACE, TINY, _clips, _tcfg, interrupted_then_resumed


def test_warp_mel_moves_the_mel_axis_by_the_factor():
    ramp = torch.arange(20.0)[None].repeat(3, 1)                           # band f holds the value f
    assert torch.equal(warp_mel(ramp, 1.0), ramp)
    up = warp_mel(ramp, 2.0)                                               # band f reads band f / 2
    assert torch.allclose(up[0], torch.arange(20.0) / 2)
    down = warp_mel(ramp, 0.5)                                             # band f reads 2 f, clamped to the top band
    assert torch.allclose(down[0, :10], torch.arange(10.0) * 2) and torch.all(down[0, 10:] == 19)


def test_augment_feats_is_seeded_bounded_and_off_by_default():
    f = torch.randn(30, 40)
    assert augment_feats(f, 5, 0.0, 0) is f
    a, b = augment_feats(f, 5, 0.2, 8), augment_feats(f, 5, 0.2, 8)
    assert torch.equal(a, b) and not torch.equal(a, augment_feats(f, 6, 0.2, 8))
    widths = []
    for seed in range(200):
        masked = (augment_feats(f, seed, 0.0, 8) == 0).all(0)               # masked bands are zero in every frame
        idx = torch.nonzero(masked).flatten()
        widths.append(len(idx))
        if len(idx):
            assert int(idx[-1] - idx[0]) + 1 == len(idx)                    # one contiguous block
    assert max(widths) <= 8 and min(widths) == 0 and len(set(widths)) > 5


def test_resample_frames_and_stretch_rate():
    x = torch.arange(11.0)[:, None].repeat(1, 2)
    assert resample_frames(x, 11) is x
    assert torch.allclose(resample_frames(x, 6)[:, 0], torch.arange(0.0, 11.0, 2.0))   # twice as fast
    assert torch.allclose(resample_frames(x, 21)[:, 1], torch.arange(0.0, 10.5, 0.5))  # half as fast
    assert stretch_rate(3, 0.0) == 1.0
    rates = [stretch_rate(s, 0.15) for s in range(100)]
    assert min(rates) >= torch.exp(torch.tensor(-0.15)) - 1e-6 and max(rates) <= torch.exp(torch.tensor(0.15)) + 1e-6
    assert max(rates) - min(rates) > 0.2


def test_ensemble_members_draw_their_own_batches():
    clips, t = _clips(3), _tcfg()
    a0, a1 = sample_global_batch(clips, 5, 8, 32, 40, t, 0), sample_global_batch(clips, 5, 8, 32, 40, t, 1)
    assert a0 == sample_global_batch(clips, 5, 8, 32, 40, t) and a0 != a1   # member 0: the single network's stream


def test_collate_without_augmentation_is_the_plain_windows_and_with_it_a_speed_change():
    clips = _clips(3)
    items = sample_global_batch(clips, 2, 4, 32, 40, _tcfg())
    plain = _collate(clips, items, 32, 40, torch.device("cpu"), 6, _tcfg())
    for b, (ci, s, *_rest) in enumerate(items):
        assert torch.equal(plain[0][b], clips[ci].feats[s:s + 32]) and torch.equal(plain[2][b], clips[ci].motion[s:s + 32])
    fast = _collate(clips, items, 32, 40, torch.device("cpu"), 6, _tcfg(speed=0.3))
    for b, (ci, s, _, _, seed) in enumerate(items):
        n = min(round(32 * stretch_rate(seed, 0.3)), clips[ci].num_frames - s)
        want = resample_frames(clips[ci].motion[s:s + n], 32)              # audio and motion stretched alike
        assert torch.allclose(fast[2][b], want) and torch.allclose(fast[0][b], resample_frames(clips[ci].feats[s:s + n], 32))


def test_ensemble_averages_its_members_and_round_trips(tmp_path):
    clips = _clips(3)
    cfg = MotionPriorConfig(**dict(TINY.to_dict(), members=3))
    prior = train_prior(clips, SPACE, AUDIO, _tcfg(steps=4, vtlp=0.1, freq_mask=2, speed=0.1), cfg, tmp_path / "e.pt",
                        log=lambda m: None)
    assert isinstance(prior.net, PriorEnsemble) and len(prior.net.members) == 3
    c = clips[0]
    outs = [prior.member_forward(i, c.feats[None], c.pitch[None]) for i in range(3)]
    mean = prior(c.feats[None], c.pitch[None])
    assert len(prior.member_nets) == 3 and not torch.allclose(outs[0]["motion"], outs[1]["motion"])   # initialised apart
    for k, v in mean.items():
        assert torch.allclose(v, torch.stack([o[k] for o in outs]).mean(0), atol=1e-6), k
    back = MotionPrior.load(tmp_path / "e.pt")
    a, b = prior.predict(c.feats, c.pitch), back.predict(c.feats, c.pitch)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    single = train_prior(clips, SPACE, AUDIO, _tcfg(steps=1), TINY, None, log=lambda m: None)
    assert not any(k.startswith("members.") for k in single.checkpoint()["state_dict"])   # one network: old format
    with pytest.raises(ValueError, match="members"):
        MotionPriorConfig(members=0).validate()
    with pytest.raises(ValueError, match="style"):
        MotionPriorConfig(members=2, style=True).validate()


def test_augmented_ensemble_training_resumes_exactly_and_its_loss_falls(tmp_path, monkeypatch):
    clips = _clips(3)
    cfg = MotionPriorConfig(**dict(TINY.to_dict(), members=2))
    aug = dict(vtlp=0.15, freq_mask=2, speed=0.15)
    logs = []
    full = train_prior(clips, SPACE, AUDIO, _tcfg(steps=60, log_every=10, checkpoint_every=0, **aug), cfg,
                       tmp_path / "full.pt", log=logs.append)
    motion = [float(m.split("motion ")[1].split()[0]) for m in logs if m.startswith("step")]
    assert motion[-1] < 0.6 * motion[0], motion                            # both members learn
    short = _tcfg(steps=8, **aug)
    ref = train_prior(clips, SPACE, AUDIO, short, cfg, tmp_path / "ref.pt", log=lambda m: None)
    resumed = interrupted_then_resumed(clips, short, cfg, tmp_path / "part.pt", monkeypatch)
    for (k, v), (_, w) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-6), k
    assert full.cfg.members == 2
