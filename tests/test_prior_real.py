"""The shipped motion prior on real speech, and a tiny prior trained on real pool captures."""
from pathlib import Path

import numpy as np
import pytest

POOL_CAPTURES = Path("/work/cache/pool")


def test_shipped_prior_loads_and_has_a_model_card():
    from avatar.prior.api import SHIPPED_PRIOR, default_prior, load_prior

    assert default_prior() == SHIPPED_PRIOR and SHIPPED_PRIOR.stat().st_size < 20 * 2 ** 20
    card = (SHIPPED_PRIOR.parent / "MODEL_CARD.md").read_text()
    for word in ("Licences", "Metrics", "Limits", "held out"):
        assert word.lower() in card.lower()
    p = load_prior(SHIPPED_PRIOR)
    assert p.motion_dim == 147 and p.meta.get("targets") == "clip_centred"


def test_shipped_prior_opens_more_on_speech_than_on_silence(media):
    from avatar.audio.timeline import SAMPLE_RATE, num_frames
    from avatar.media.audio import load_audio
    from avatar.prior.api import SHIPPED_PRIOR, predict_prior

    wav = load_audio(media / "audio" / "librispeech_198-209-0000_F.ogg")[: 6 * SAMPLE_RATE]
    sil = np.zeros(3 * SAMPLE_RATE, np.float32)
    x = np.concatenate([sil, wav, sil])
    n = num_frames(len(x), 25.0)
    out = predict_prior(SHIPPED_PRIOR, x, 25.0, n)
    op = out["opening"]
    a, b = 75, 75 + 150                                       # speech frames
    assert op[a + 5:b - 5].std() > 10 * op[5:a - 5].std()    # the mouth moves with speech, holds still in silence
    assert out["motion"].shape == (n, 147) and out["head_pose"].shape == (n, 6)


def test_shipped_prior_mean_opening_is_higher_on_speech_than_on_silence(media):
    """Before the silence gate the prior held the mouth in leading digital silence at 0.0998, as open
    as its speech mean 0.0997; the gate closes it to the pooled rest."""
    from avatar.audio.timeline import SAMPLE_RATE
    from avatar.media.audio import load_audio
    from avatar.prior.api import SHIPPED_PRIOR, load_prior, predict_prior

    wav = load_audio(media / "audio" / "librispeech_198-209-0000_F.ogg")[: 6 * SAMPLE_RATE]
    sil = np.zeros(3 * SAMPLE_RATE, np.float32)
    out = predict_prior(SHIPPED_PRIOR, np.concatenate([sil, wav, sil]), 25.0, 300)
    op = out["opening"]
    speech, lead, trail = op[80:220].mean(), op[5:70].mean(), op[230:295].mean()
    assert speech > 1.5 * max(lead, trail)
    assert out["personalised"] == "pooled"
    # the pauses sit at the prior's rest opening (pooled mean + rest deviation), not below it
    p = load_prior(SHIPPED_PRIOR)
    rest = float(p.opening_of((p.calib["motion_mean"] + p.calib["rest_dev"])[None])[0])
    assert abs(lead - rest) < 0.01 and float(p.calib["rest_frames"]) >= 25


@pytest.mark.skipif(not (POOL_CAPTURES / "grid_bbaf2n" / "transforms.json").is_file(),
                    reason="pool captures (/work/cache/pool, made with `avatar capture` from ../shared/media/pool) absent")
def test_tiny_prior_on_pool_clips_beats_the_mean_baseline(tmp_path):
    from avatar.prior.api import _audio_cfg
    from avatar.prior.config import MotionPriorConfig, PriorTrainConfig
    from avatar.prior.data import load_clip
    from avatar.prior.evaluate import evaluate_prior
    from avatar.prior.trainer import train_prior

    names = ["grid_bbaf2n", "grid_brbk7n", "grid_lbax4n", "grid_lrwp9a", "grid_sbia1a"]
    acfg = _audio_cfg(n_mels=80)
    clips = []
    for n in names:
        c, ms = load_clip(POOL_CAPTURES / n, acfg)
        clips.append(c)
    out = tmp_path / "tiny.pt"
    train_prior(clips[:4], ms, acfg.to_dict(), PriorTrainConfig(steps=150, batch_size=8, log_every=0, checkpoint_every=0),
                MotionPriorConfig(d_model=32, num_layers=1), out, calib_clips=clips[4:], log=lambda m: None)
    res = evaluate_prior(out, [POOL_CAPTURES / "grid_lbbc2a"])["summary"]
    assert res["prior_unseen_mouth_open_corr"] > res["baseline_mean_mouth_open_corr"] + 0.2
    assert 0.3 < res["prior_unseen_amplitude_ratio"] < 3.0
