"""capture with the "known" landmark backend on small made-up clips: face losses, concatenated clips,
the smoothed crop and the consistency of stored intrinsics, poses and landmarks."""
import json
import subprocess

import numpy as np
import pytest

from avatar.data import load_capture
from avatar.data.face_model import CANONICAL
from capture.pipeline import capture
from avatar.media.ffmpeg import ffmpeg_exe

W, H, F, FOCAL = 320, 240, 100, 300.0


def _clip(folder, gap=None, audio_s=4):
    folder.mkdir()
    v = folder / "clip.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-y", "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc=size={W}x{H}:rate=25:duration=4", "-f", "lavfi", "-i", f"sine=frequency=440:duration={audio_s}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(v)], check=True)
    lm = np.zeros((F, 478, 2), np.float32)
    poses = []
    for t in range(F):
        a = np.radians(12 * np.sin(t / 10))
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        tr = np.array([0.04 * np.sin(t / 15), 0.02 * np.cos(t / 20), 0.5])  # the head wanders in the frame
        X = CANONICAL @ R.T + tr
        lm[t] = FOCAL * X[:, :2] / X[:, 2:] + [W / 2, H / 2]
        poses.append((R, tr))
    if gap:
        lm[gap[0]:gap[1]] = np.nan
    np.savez(folder / "ground_truth.npz", landmarks2d=lm)
    return v, poses


def test_face_loss_reported_and_dropped(tmp_path):
    v, _ = _clip(tmp_path / "a", gap=(40, 60))
    capture([v], tmp_path / "out", backend="known", size=128, log=lambda m: None)
    ds = load_capture(tmp_path / "out")
    assert ds.num_frames == 80
    assert not set(range(40, 60)) & set(ds.frame_times.tolist())
    s = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert s["frames_dropped"] == 20 and s["long_face_losses_s"]["0"] == [[1.6, 2.4]]
    assert any("face lost" in w and "1.60-2.40 s" in w for w in s["warnings"])
    assert abs(len(ds.audio) / 16000 - 4.0) < 0.05   # audio keeps the full timeline


def test_smooth_crop_and_concatenated_clips_are_consistent(tmp_path):
    v, poses = _clip(tmp_path / "a")
    capture([v, v], tmp_path / "out", backend="known", size=128, crop_mode="smooth", crop_scale=1.6, pose_smooth_sigma=0,
            work_format="jpg",
            log=lambda m: None)
    ds = load_capture(tmp_path / "out")
    assert ds.num_frames == 2 * F and ds.frame_times.tolist() == list(range(2 * F))
    assert abs(len(ds.audio) / 16000 - 8.0) < 0.05
    assert len({tuple(k.ravel()) for k in ds.Ks}) > 10      # the box follows the head: per-frame K
    # stored K and viewmat project the canonical face onto the stored landmarks (exact inputs)
    for i in (0, 37, 150):
        X = ds.viewmats[i, :3, :3] @ CANONICAL.T + ds.viewmats[i, :3, 3:4]
        p = (ds.Ks[i] @ X)[:2] / X[2]
        assert np.abs(p.T - ds.tracks["landmarks2d"][i]).max() < 0.05
        R, tr = poses[i % F]
        assert np.abs(ds.viewmats[i, :3, 3] - tr).max() < 0.002
    tj = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert "fl_x" not in tj and "fl_x" in tj["frames"][0]      # per-frame intrinsics for nerfstudio


@pytest.mark.parametrize("audio_s", [3, 5])
def test_audio_video_offset_reported(tmp_path, audio_s):
    v, _ = _clip(tmp_path / "a", audio_s=audio_s)
    capture([v], tmp_path / "out", backend="known", size=64, log=lambda m: None)
    ds = load_capture(tmp_path / "out")
    s = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    off = s["audio"]["offsets"][0]
    assert off["offset_s"] == pytest.approx(audio_s - 4.0, abs=0.06)
    assert any("offset" in w for w in s["warnings"])
    # the audio track spans the frames exactly (padded with silence, or trimmed)
    assert abs(len(ds.audio) / 16000 - 4.0) < 0.05
    assert (np.abs(ds.audio[-8000:]).max() < 1e-3) == (audio_s < 4)


def test_truncated_video_decodes_what_is_there(tmp_path):
    v, _ = _clip(tmp_path / "a")
    fast = tmp_path / "fast.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-y", "-v", "error", "-i", str(v), "-c", "copy", "-movflags",
                    "+faststart", str(fast)], check=True)
    data = fast.read_bytes()
    cut = tmp_path / "a" / "cut.mp4"           # next to ground_truth.npz
    cut.write_bytes(data[: int(len(data) * 0.85)])
    capture([cut], tmp_path / "out", backend="known", size=64, log=lambda m: None)
    s = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert 75 <= s["frames_decoded"] < 100
    assert any("truncated or corrupt" in w for w in s["warnings"])
