"""Motion-prior training: it learns (the person's statistics restore their style), resume is exact, 2-process gloo DDP = 1 process."""
import os
import socket

import pytest
import torch

from avatar.prior.config import PriorTrainConfig
from avatar.prior.data import PriorClip
from avatar.prior.trainer import sample_global_batch, train_prior, train_state_path
from avatar.prior.model import MotionPrior, PriorCheckpointError
from avatar.prior.config import MotionPriorConfig

SPACE = {"kind": "in-test", "version": 1}
AUDIO = {"kind": "in-test-envelope"}


def _clips(n=4, frames=160, seed=0):
    """In-test synthetic tensors: a 'loudness' envelope drives a mouth-opening direction in code space
    with a per-identity gain (the style); audio features are noisy functions of the envelope."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.tensor([1.0, 0.5, -0.3, 0.0, 0.2, 0.1])
    clips = []
    for i in range(n):
        env = torch.zeros(frames)
        t = 0
        while t < frames:
            d = int(torch.randint(4, 10, (1,), generator=g))
            if torch.rand((), generator=g) < 0.8:
                env[t:t + d] = torch.sin(torch.linspace(0, torch.pi, min(d, frames - t))) * (0.5 + 0.5 * torch.rand((), generator=g))
            t += d
        gain = 0.5 + i * 0.5                                              # the identity's style
        opening = gain * env
        motion = opening[:, None] * basis + 0.01 * torch.randn(frames, 6, generator=g)
        feats = torch.stack([env * (k + 1) / 4 + 0.05 * torch.randn(frames, generator=g) for k in range(4)], 1)
        pitch = torch.stack([env > 0.05, env, torch.log(env + 1e-3)], 1).float()
        clips.append(PriorClip(f"id{i}", feats, pitch, motion, (torch.rand(frames, generator=g) < 0.05).float(),
                               0.01 * torch.randn(frames, 6, generator=g), 25.0, {"gain": gain}).check())
    return clips


TINY = MotionPriorConfig(d_model=32, num_layers=2, num_heads=4, past_frames=8, lookahead_frames=1, conv_kernel=3,
                         style_tokens=2, style_layers=1, dropout=0.0)


def _tcfg(**kw):
    base = dict(steps=8, batch_size=4, window_frames=32, ref_frames=40, lr=3e-3, warmup_steps=2, checkpoint_every=4,
                log_every=0, pca_var=0.0, style_dropout=0.3, seed=3)
    base.update(kw)
    return PriorTrainConfig(**base)


def _nmse(pred, clip):
    return float(((pred - clip.motion) ** 2).sum() / ((clip.motion - clip.motion.mean(0)) ** 2).sum())


@pytest.mark.slow
def test_prior_learns_audio_to_motion_and_the_persons_statistics_restore_their_style(tmp_path):
    """Targets are per-clip centred and scaled to the pool's amplitude (a person's style is their mean
    and spread of motion, MotionPrior.personalise): the prior predicts the deviation from audio, and a
    short reference of the person (its mean and std per code) restores their offset and gain."""
    torch.manual_seed(0)
    clips = _clips(4, frames=200)
    prior = train_prior(clips, SPACE, AUDIO, _tcfg(steps=250, batch_size=8, lr=3e-3, warmup_steps=20, checkpoint_every=0),
                        TINY, tmp_path / "p.pt", log=lambda m: None)
    assert not prior.cfg.style and prior.meta["targets"] == "clip_centred"
    held = _clips(4, frames=200, seed=1)                                   # unseen sequences, same gains
    errs = []
    for c in (held[0], held[3]):                                          # the two most different styles
        ref, test = c.slice(0, 60), c.slice(60, 200)
        out = prior.predict(test.feats, test.pitch)
        personal = prior.personalise(out["deviation"], ref.motion.mean(0), ref.motion.std(0))
        errs.append((_nmse(personal, test), _nmse(out["motion"], test)))   # vs the pooled mean and amplitude
        # the deviation follows the audio (correlation of the opening direction with the truth)
        o_pred, o_true = out["deviation"][:, 0], test.motion[:, 0]
        assert float(torch.corrcoef(torch.stack([o_pred, o_true]))[0, 1]) > 0.9
    for personal, pooled in errs:
        assert personal < 0.2, errs                                       # learned audio -> motion
        assert personal < 0.7 * pooled, errs                              # the person's statistics tell the gain
    assert (tmp_path / "p.pt").is_file() and train_state_path(tmp_path / "p.pt").is_file()


def test_global_batch_is_history_free_and_reference_disjoint():
    clips = _clips(3)
    a = sample_global_batch(clips, 7, 16, 32, 40, _tcfg())
    assert a == sample_global_batch(clips, 7, 16, 32, 40, _tcfg())
    assert a != sample_global_batch(clips, 8, 16, 32, 40, _tcfg())
    for ci, s, r, _, _ in a:                                                # 160 >= 32 + 40: disjoint windows
        assert r + 40 <= s or r >= s + 32
        assert 0 <= s <= 160 - 32 and 0 <= r <= 160 - 40


def interrupted_then_resumed(clips, tcfg, mcfg, out, monkeypatch, logs=None):
    """Train into `out`, the process dying during step 6 (a checkpoint every 4 steps), then rerun the
    same training: -> the resumed prior (the training state had step 4 when it died)."""
    import avatar.prior.trainer as trainer

    orig = trainer.lr_at

    def dying_lr_at(step, cfg):
        if step == 6:
            raise KeyboardInterrupt
        return orig(step, cfg)

    monkeypatch.setattr(trainer, "lr_at", dying_lr_at)
    with pytest.raises(KeyboardInterrupt):
        train_prior(clips, SPACE, AUDIO, tcfg, mcfg, out, log=lambda m: None)
    monkeypatch.setattr(trainer, "lr_at", orig)
    assert not out.exists() and torch.load(train_state_path(out), weights_only=True)["train_state"]["step"] == 4
    return train_prior(clips, SPACE, AUDIO, tcfg, mcfg, out, log=(logs.append if logs is not None else lambda m: None))


def test_resume_continues_exactly(tmp_path, monkeypatch):
    clips = _clips(3)
    full = train_prior(clips, SPACE, AUDIO, _tcfg(steps=8), TINY, tmp_path / "full.pt", log=lambda m: None)
    out = tmp_path / "part.pt"
    logs = []
    resumed = interrupted_then_resumed(clips, _tcfg(steps=8), TINY, out, monkeypatch, logs)
    assert any("resumed" in m and "step 4" in m for m in logs)
    for (k, v), (_, w) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-6), k
    assert MotionPrior.load(out).meta["identities"] == ["id0", "id1", "id2"]
    with pytest.raises(PriorCheckpointError, match="other clips"):        # resume refuses different data
        train_prior(clips[:2], SPACE, AUDIO, _tcfg(steps=9), TINY, out, log=lambda m: None)


def test_ema_weights_are_saved_and_resume_exactly(tmp_path, monkeypatch):
    """--train.ema: the prior carries the moving average of the weights, the training state the last step's
    (and the average, so a resumed run ends with the same prior)."""
    clips = _clips(3)
    full = train_prior(clips, SPACE, AUDIO, _tcfg(steps=8, ema=0.8), TINY, tmp_path / "full.pt", log=lambda m: None)
    last = torch.load(train_state_path(tmp_path / "full.pt"), weights_only=True)
    plain = train_prior(clips, SPACE, AUDIO, _tcfg(steps=8), TINY, None, log=lambda m: None)
    for k, v in plain.net.state_dict().items():                           # the training state: the last step
        assert torch.allclose(last["state_dict"][k], v, atol=1e-6), k
    diff = max(float((full.net.state_dict()[k] - v).abs().max()) for k, v in plain.net.state_dict().items())
    assert diff > 1e-4 and MotionPrior.load(tmp_path / "full.pt").meta["ema"] == 0.8
    for k, v in MotionPrior.load(tmp_path / "full.pt").net.state_dict().items():
        assert torch.equal(v, full.net.state_dict()[k]), k                # the saved prior: the average
    resumed = interrupted_then_resumed(clips, _tcfg(steps=8, ema=0.8), TINY, tmp_path / "part.pt", monkeypatch)
    for k, v in full.net.state_dict().items():
        assert torch.allclose(resumed.net.state_dict()[k], v, atol=1e-6), k
    with pytest.raises(ValueError, match="ema"):
        train_prior(clips, SPACE, AUDIO, _tcfg(steps=2, ema=1.0), TINY, None, log=lambda m: None)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    prior = train_prior(_clips(3), SPACE, AUDIO, _tcfg(steps=6, batch_size=2, checkpoint_every=3), TINY, out,
                        log=lambda m: None)
    torch.save(prior.net.state_dict(), os.path.join(result_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(out), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    single = train_prior(_clips(3), SPACE, AUDIO, _tcfg(steps=6, batch_size=4, checkpoint_every=0), TINY, None,
                         log=lambda m: None)
    moved = 0.0
    init = train_prior(_clips(3), SPACE, AUDIO, _tcfg(steps=0, batch_size=4, checkpoint_every=0), TINY, None,
                       log=lambda m: None)
    for k, v in single.net.state_dict().items():
        assert torch.equal(r0[k], r1[k]), k                               # replicas identical (all-reduced grads)
        assert torch.allclose(r0[k], v, atol=1e-5, rtol=1e-4), k          # 2 x batch 2 == 1 x batch 4
        moved = max(moved, float((v - init.net.state_dict()[k]).abs().max()))
    assert moved > 1e-3                                                   # training actually changed the weights
    saved = MotionPrior.load(out)                                         # rank 0 wrote it, atomically
    assert torch.load(train_state_path(out), weights_only=True)["train_state"]["world_size"] == 2
    for k, v in saved.net.state_dict().items():
        assert torch.equal(v, r0[k]), k
