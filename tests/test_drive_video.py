"""`avatar drive`: mp4 whose duration matches the audio to the frame, with the audio muxed in;
stereo side by side + per-eye files; transparent PNG sequence with alpha; a checkpoint driven
through a camera path over a plate; streamed frames equal offline frames."""
import json
from pathlib import Path

import numpy as np
import pytest

from avatar.commands.drive import Drive
from avatar.runtime.sources import AvatarSource, load_avatar
from avatar.runtime.blink import BlinkConfig
from avatar.audio.timeline import DriveError, num_frames
from avatar.runtime.view import ViewConfig


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A small AvatarModel on the canonical face with non-zero (random) deformation heads, so the
    audio visibly moves Gaussians; saved as a real checkpoint (no training needed)."""
    import torch

    from avatar.runtime.camera_path import frontal_camera
    from avatar.audio.features import AudioFeatureConfig
    from avatar.data.face_model import CANONICAL
    from avatar.model.avatar import AvatarModel
    from avatar.model.config import GaussianConfig, ModelConfig
    from avatar.model.gaussians import init_gaussians

    torch.manual_seed(seed)
    cfg = ModelConfig(gaussians=GaussianConfig(num_face=500, num_mouth=80, num_torso=80, init_scale=0.012,
                                               init_opacity=0.8))
    cfg.audio.causal = True
    cfg.audio.lookahead = 1
    model = AvatarModel(cfg, init_gaussians(cfg.gaussians, CANONICAL), AudioFeatureConfig().to_dict())
    with torch.no_grad():
        model.gaussians.params["colors"].normal_(0, 1.0)
        for net in (model.face_deform, model.mouth_deform):
            net.head.weight.normal_(0, 0.3)
    cam = frontal_camera(64, 64, distance=0.6)
    model.save(path, meta={"fps": 25.0, "width": 64, "height": 64, "viewmat": cam.viewmat.tolist(),
                           "K": cam.K.tolist()})
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def read(path):
    from avatar.media.video import read_frames

    return np.stack(list(read_frames(path)))


def test_drive_procedural_mp4_duration_matches_audio_to_the_frame(media, tmp_path):
    from avatar.media.audio import load_audio
    from avatar.media.probe import probe

    src_audio = media / "audio" / "vctk_p240_F.mp3"
    out = tmp_path / "talk.mp4"
    info = Drive("procedural", src_audio, out=out, width=96, height=96).run()
    wav = load_audio(src_audio)
    n = num_frames(len(wav), 25.0)
    frames = read(out)
    assert frames.shape == (n, 96, 96, 3) and info["frames"] == n
    pr = probe(out)
    assert pr.width == 96 and pr.fps == 25 and pr.has_audio
    muxed = load_audio(out)
    video_s, audio_s = n / 25.0, len(muxed) / 16000
    assert abs(audio_s - video_s) < 1 / 25, (audio_s, video_s)  # muxed audio fills the video
    assert 0 <= video_s - len(wav) / 16000 < 1 / 25  # and the video covers the speech, < 1 frame more
    # the speech itself is in there, aligned (AAC priming/delay well under a frame)
    m = min(len(wav), len(muxed))
    lag = np.argmax(np.correlate(muxed[:m][4000:20000], wav[4000 - 320:20000 + 320], "valid")) - 320
    assert abs(lag) < 320, lag
    c = np.corrcoef(muxed[:m], np.roll(wav[:m], lag))[0, 1]
    assert c > 0.95, c
    # the face moves with the speech: frames differ over time
    assert np.abs(frames[1:].astype(int) - frames[:-1]).mean(axis=(1, 2, 3)).max() > 0.5


def test_drive_stereo_side_by_side_per_eye_and_transparent_pngs(tmp_path):
    import cv2

    from avatar.media.audio import save_wav

    t = np.arange(int(16000 * 1.1)) / 16000
    wav = (0.4 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    save_wav(tmp_path / "a.wav", wav, 16000)
    out = tmp_path / "vr.mp4"
    info = Drive("procedural", tmp_path / "a.wav", out=out, width=80, height=64, stereo=True,
                 background="transparent", bg_color=(0.0, 0.0, 1.0)).run()
    n = num_frames(len(wav), 25.0)
    assert n == 28
    sbs, left, right = read(out), read(tmp_path / "vr.left.mp4"), read(tmp_path / "vr.right.mp4")
    assert sbs.shape == (n, 64, 160, 3) and left.shape == right.shape == (n, 64, 80, 3)
    assert np.abs(sbs[:, :, :80].astype(int) - left).mean() < 3
    assert np.abs(sbs[:, :, 80:].astype(int) - right).mean() < 3
    assert np.abs(left.astype(int) - right).mean() > 2  # two viewpoints, not a copy
    assert sbs[:, :3, :3, 2].mean() > 200 and sbs[:, :3, :3, 0].mean() < 40  # preview over blue
    pngs = sorted((tmp_path / "vr_rgba").glob("*.png"))
    assert len(pngs) == n and (tmp_path / "vr_rgba" / "audio.wav").is_file()
    img = cv2.imread(str(pngs[5]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (64, 160, 4) and img.dtype == np.uint8
    a = img[..., 3]
    assert a[0, 0] == 0 and a[0, -1] == 0 and a[-1, 0] < 255  # background is transparent
    assert a[32, 40] == 255 and a[32, 120] == 255  # the face (each eye) is opaque
    assert 0.15 < (a > 128).mean() < 0.9
    assert info["extra_outputs"][-1] == tmp_path / "vr_rgba"


def test_drive_checkpoint_along_a_camera_path_over_a_plate(ckpt, tmp_path):
    import cv2

    from avatar.media.audio import save_wav

    wav = (0.3 * np.random.default_rng(0).standard_normal(int(16000 * 0.9))).astype(np.float32)
    save_wav(tmp_path / "a.wav", wav, 16000)
    plate = np.zeros((30, 40, 3), np.uint8)
    plate[:, :20] = (0, 200, 0)  # BGR green left, red right
    plate[:, 20:] = (0, 0, 200)
    cv2.imwrite(str(tmp_path / "plate.png"), plate)
    path = {"version": 1, "width": 64, "height": 64, "fov_y_deg": 30,
            "keyframes": [{"time": 0.0, "position": [-0.08, 0, -0.6], "look_at": [-0.08, 0, 0]},
                          {"time": 0.8, "position": [0.08, 0, -0.6], "look_at": [0.08, 0, 0]}]}
    (tmp_path / "path.json").write_text(json.dumps(path))
    out = tmp_path / "o.mp4"
    Drive(str(ckpt), tmp_path / "a.wav", out=out, pose="path", camera_path=tmp_path / "path.json",
          background="plate", plate=tmp_path / "plate.png", blink=BlinkConfig(enabled=False)).run()
    fr = read(out)
    assert fr.shape == (num_frames(len(wav), 25.0), 64, 64, 3)
    assert fr[:, :4, :4, 1].mean() > 150 and fr[:, :4, -4:, 0].mean() > 150  # the plate behind
    # the camera slides along the path (x -0.08 -> +0.08 m at 0.6 m, f = 119 px): the head moves
    # 32 px from right to left in the image
    def cx(img):
        img = img.astype(int)
        green = np.abs(img - [0, 200, 0]).sum(-1) < 60
        red = np.abs(img - [200, 0, 0]).sum(-1) < 60
        return np.nonzero(~green & ~red)[1].mean()
    shift = cx(fr[0]) - cx(fr[20])
    assert 20 < shift < 40, shift


def test_streamed_frames_equal_offline_frames(ckpt):
    from avatar.runtime.blink import BlinkConfig

    av = load_avatar(ckpt)
    rng = np.random.default_rng(1)
    t = np.arange(int(16000 * 0.7)) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 150 * t) * (rng.random(len(t)) + 0.5) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)

    def run(sizes, streaming):
        src = AvatarSource(av, ViewConfig(48, 48), streaming=streaming, batch=3, blink=BlinkConfig(seed=3))
        out, i, k = [], 0, 0
        while i < len(wav):
            out += src.push_audio(wav[i:i + sizes[k % len(sizes)]])
            i, k = i + sizes[k % len(sizes)], k + 1
        return out + src.flush()
    a, b = run([len(wav)], False), run([640, 123, 1000], True)
    assert [f.index for f in a] == [f.index for f in b] == list(range(num_frames(len(wav), 25.0)))
    for fa, fb in zip(a, b):
        assert np.abs(fa.rgb.astype(int) - fb.rgb).max() <= 2
    diffs = [np.abs(a[i].rgb.astype(int) - a[i + 1].rgb).mean() for i in range(len(a) - 1)]
    assert max(diffs) > 0.2  # the audio drives visible deformation


def test_drive_errors_are_clear(ckpt, tmp_path):
    from avatar.media.audio import AudioError, save_wav
    from avatar.model.avatar import CheckpointError

    save_wav(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(DriveError, match="even"):
        Drive(str(ckpt), tmp_path / "a.wav", out=tmp_path / "o.mp4", width=63).run()
    with pytest.raises(DriveError, match="--data"):
        Drive(str(ckpt), tmp_path / "a.wav", out=tmp_path / "o.mp4", pose="clip").run()
    with pytest.raises(DriveError, match="--camera-path"):
        Drive(str(ckpt), tmp_path / "a.wav", out=tmp_path / "o.mp4", pose="path").run()
    with pytest.raises(DriveError, match="plate"):
        Drive(str(ckpt), tmp_path / "a.wav", out=tmp_path / "o.mp4", background="plate").run()
    with pytest.raises(DriveError, match=".mp4"):
        Drive(str(ckpt), tmp_path / "a.wav", out=tmp_path / "o.avi").run()
    with pytest.raises(AudioError, match="nope.wav"):
        Drive(str(ckpt), tmp_path / "nope.wav", out=tmp_path / "o.mp4").run()
    with pytest.raises(CheckpointError, match="missing.pt"):
        Drive(str(tmp_path / "missing.pt"), tmp_path / "a.wav", out=tmp_path / "o.mp4").run()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        Drive(str(tmp_path / "junk.pt"), tmp_path / "a.wav", out=tmp_path / "o.mp4").run()
    assert not (tmp_path / "o.mp4").exists()


def test_drive_with_a_motion_prior_feeds_motion_codes_and_blinks(tmp_path):
    """--prior: motion codes (and blinks) predicted from the audio reach the deformation."""
    import dataclasses

    import torch

    from avatar.audio.features import AudioFeatureConfig
    from avatar.data.face_model import CANONICAL
    from avatar.media.audio import save_wav
    from avatar.model.avatar import AvatarModel
    from avatar.model.config import GaussianConfig, ModelConfig
    from avatar.model.gaussians import init_gaussians
    from avatar.prior.model import MotionPrior
    from avatar.prior.config import MotionPriorConfig
    from avatar.prior.pca import MotionPCA

    torch.manual_seed(0)
    space = {"kind": "test", "version": 1, "indices": [1, 2, 3]}
    M = 7
    pcfg = MotionPriorConfig(audio_dim=32, pitch_dim=4, code_dim=M, d_model=32, num_layers=1, num_heads=4,
                             past_frames=6, lookahead_frames=2, conv_kernel=5, dropout=0.0)
    pca = MotionPCA.fit(torch.randn(200, M) @ torch.randn(M, M), 0.0)
    pcfg = dataclasses.replace(pcfg, code_dim=pca.latent_dim)
    prior = MotionPrior(pcfg, pca, space, AudioFeatureConfig().to_dict(), torch.zeros(32), torch.ones(32),
                        torch.zeros(4), torch.ones(4), torch.zeros(6), torch.ones(6))
    with torch.no_grad():                                                  # large predicted deviations
        prior.net.motion_head.weight.normal_(0, 0.5)
    prior.save(tmp_path / "prior.pt")

    cfg = ModelConfig(gaussians=GaussianConfig(num_face=300, num_mouth=50, num_torso=50, init_scale=0.012,
                                               init_opacity=0.8), motion_dim=M)
    cfg.deform.use_motion = True
    model = AvatarModel(cfg, init_gaussians(cfg.gaussians, CANONICAL), AudioFeatureConfig().to_dict(), space)
    with torch.no_grad():
        for net in (model.face_deform, model.mouth_deform):
            net.head.weight.normal_(0, 0.3)
    model.save(tmp_path / "m.pt", meta={"fps": 25.0, "width": 48, "height": 48})
    t = np.arange(int(16000 * 0.6)) / 16000
    save_wav(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 160 * t)).astype(np.float32), 16000)
    off = dict(width=48, height=48, blink=BlinkConfig(enabled=False))
    Drive(str(tmp_path / "m.pt"), tmp_path / "a.wav", out=tmp_path / "with.mp4", prior=tmp_path / "prior.pt", **off).run()
    Drive(str(tmp_path / "m.pt"), tmp_path / "a.wav", out=tmp_path / "without.mp4", prior=Path("none"), **off).run()
    a, b = read(tmp_path / "with.mp4"), read(tmp_path / "without.mp4")
    assert a.shape == b.shape == (15, 48, 48, 3)
    assert np.abs(a.astype(int) - b).mean() > 0.5  # the predicted motion codes change the face
    # no --prior: the shipped prior is for another motion space, so none drives this avatar (neutral motion)
    Drive(str(tmp_path / "m.pt"), tmp_path / "a.wav", out=tmp_path / "default.mp4", **off).run()
    assert np.abs(read(tmp_path / "default.mp4").astype(int) - b).max() <= 2
    bad = dict(space, version=2)
    model.motion_space = bad
    model.save(tmp_path / "other.pt", meta={"fps": 25.0})
    from avatar.prior.model import PriorCheckpointError

    with pytest.raises(PriorCheckpointError, match="motion-space"):
        Drive(str(tmp_path / "other.pt"), tmp_path / "a.wav", out=tmp_path / "x.mp4", prior=tmp_path / "prior.pt",
              **off).run()


def test_drive_with_the_training_capture_clip_pose_plate_and_fps(ckpt, tmp_path):
    """--data CAPTURE: the clip's cameras (ping-pong), its background plate, and its fps/camera
    when the checkpoint's meta lacks them."""
    import torch

    from avatar.data import CaptureWriter, MotionSpace
    from avatar.data.face_model import CANONICAL
    from avatar.media.audio import save_wav
    from avatar.media.probe import probe

    F, H, W = 6, 40, 48
    K = np.array([[60.0, 0, 24.0], [0, 60.0, 20.0], [0, 0, 1]])
    plate = np.zeros((H, W, 3), np.uint8)
    plate[..., 2] = 220  # blue
    ms = MotionSpace()
    lm = np.repeat(CANONICAL[None], F, 0)
    poses = []
    with CaptureWriter(tmp_path / "cap", fps=30.0) as w:
        for i in range(F):
            c2h = np.eye(4)
            c2h[:3, 3] = [0.02 * i, 0.0, -0.6]  # camera-to-head: sliding sideways, looking at +z
            poses.append(c2h)
            w.add_frame(plate, np.zeros((H, W), np.uint8), K, c2h, time=i)
        w.write_background(plate)
        w.write_tracks(landmarks2d=np.zeros((F, 478, 2)), landmarks3d=lm, motion=ms.encode(lm, CANONICAL),
                       blink=np.zeros(F), mouth_open=np.zeros(F), head_pose=np.stack(poses), neutral=CANONICAL)
        w.close(motion_space=ms.to_dict())
    d = torch.load(ckpt, weights_only=True)
    d["meta"] = {}  # a checkpoint that records neither fps nor camera
    torch.save(d, tmp_path / "nometa.pt")
    save_wav(tmp_path / "a.wav", (0.2 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32), 16000)
    out = tmp_path / "clip.mp4"
    Drive(str(tmp_path / "nometa.pt"), tmp_path / "a.wav", out=out, data=tmp_path / "cap", pose="clip",
          background="plate", blink=BlinkConfig(enabled=False)).run()
    fr = read(out)
    assert fr.shape == (num_frames(8000, 30.0), H, W, 3) == (15, 40, 48, 3)  # the capture's fps and size
    assert probe(out).fps == 30
    assert fr[:, :3, :3, 2].mean() > 180 and fr[:, :3, :3, :2].mean() < 50  # its plate behind the head
    # ping-pong over 6 poses: frames 0..5 slide one way, 5..10 back, frame 10 is at pose 0 again
    def cx(img):
        fg = np.abs(img.astype(int) - [0, 0, 220]).sum(-1) > 80
        return np.nonzero(fg)[1].mean()
    xs = [cx(fr[i]) for i in range(11)]
    assert xs[0] > xs[5] + 3 and abs(xs[10] - xs[0]) < 1.5 and xs[5] < xs[8]
