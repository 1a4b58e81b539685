"""capture probe/decode on real and deliberately broken inputs (made with ffmpeg in tmp dirs)."""
import subprocess

import numpy as np
import pytest

from capture.decode import iter_frames, work_size
from capture.errors import CaptureError
from avatar.media.ffmpeg import ffmpeg_exe
from avatar.media.probe import parse_ffmpeg_info
from capture.probe import probe, require_video


def ff(*args):
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-y", "-v", "error", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def may(media):
    return media / "video" / "may_5s.mp4"


def test_probe_real_clip(may):
    i = probe(may)
    assert (i.width, i.height, i.fps, i.num_frames, i.rotation) == (512, 512, 25.0, 125, 0)
    assert i.has_audio and i.audio_sr == 48000 and i.audio_channels == 2 and abs(i.duration - 5.0) < 0.05
    assert not i.variable_fps


def test_parse_rotation_and_tags():
    text = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mov':
  Duration: 00:00:02.50, start: 0.000000, bitrate: 100 kb/s
  Stream #0:0[0x1](und): Video: hevc (Main) (hvc1 / 0x31637668), yuv420p(tv), 1920x1080, 100 kb/s, 29.97 fps, 29.97 tbr, 600 tbn (default)
      Side data:
        displaymatrix: rotation of -90.00 degrees
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 64 kb/s (default)"""
    i = parse_ffmpeg_info(text, "x.mov")
    assert i.video_codec == "hevc" and (i.width, i.height) == (1920, 1080) and i.rotation == 270
    assert i.display_size == (1080, 1920) and abs(i.fps - 29.97) < 1e-6 and i.audio_channels == 1
    assert i.duration == 2.5


@pytest.mark.parametrize("content, needle", [(b"", "empty"), (b"\x00\x01garbage" * 100, "not a readable media")])
def test_empty_and_corrupt(tmp_path, content, needle):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(CaptureError, match=needle) as e:
        probe(p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(CaptureError, match="not found"):
        probe(tmp_path / "nope.mp4")


def test_truncated(tmp_path, may):
    # moov atom at the end (as in may_5s): truncation makes the file unreadable -> clear error
    p = tmp_path / "trunc.mp4"
    p.write_bytes(may.read_bytes()[:200_000])
    with pytest.raises(CaptureError, match="trunc.mp4"):
        probe(p)
    # moov at the start (faststart): the head of the file still decodes; fewer frames than the duration
    fs = tmp_path / "fast.mp4"
    ff("-i", may, "-c", "copy", "-movflags", "+faststart", fs)
    p2 = tmp_path / "trunc_fast.mp4"
    p2.write_bytes(fs.read_bytes()[: fs.stat().st_size // 2])
    i = probe(p2)
    n = sum(1 for _ in iter_frames(i, 25, (64, 64)))
    assert 10 < n < 0.8 * i.duration * 25


def test_audio_only_refused(media):
    i = probe(media / "audio" / "jfk.flac")
    with pytest.raises(CaptureError, match="audio-only"):
        require_video(i)


def test_30fps_resampled_to_25(tmp_path, may):
    p = tmp_path / "v30.mp4"
    ff("-i", may, "-t", "2", "-vf", "fps=30", "-c:v", "libx264", "-preset", "ultrafast", p)
    i = probe(p)
    assert i.fps == 30.0 and i.num_frames == 60
    frames = list(iter_frames(i, 25, (128, 128)))
    assert len(frames) == 50 and frames[0].shape == (128, 128, 3)


def test_variable_frame_rate_resampled(tmp_path, may):
    # first second at 25 fps, then every other timestamp doubled: ~18.75 fps mean, variable
    p = tmp_path / "vfr.mkv"
    ff("-i", may, "-t", "2", "-vf", "setpts='if(lt(N,25),N,25+2*(N-25))/25/TB'", "-fps_mode", "vfr",
       "-c:v", "libx264", "-preset", "ultrafast", p)
    i = probe(p)
    assert i.variable_fps
    dur = i.duration
    frames = sum(1 for _ in iter_frames(i, 25, (64, 64)))
    assert abs(frames - dur * 25) <= 2, (frames, dur)


def test_rotation_honoured(tmp_path, may):
    # coded frames rotated clockwise + a display matrix saying "rotate 90 counter-clockwise":
    # decoding must give back the upright landscape picture
    up = tmp_path / "up.mp4"
    ff("-i", may, "-t", "1", "-vf", "crop=512:384:0:64", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "10", up)
    cw = tmp_path / "cw.mp4"
    ff("-i", up, "-vf", "transpose=1", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "10", cw)
    rot = tmp_path / "rot.mp4"
    ff("-display_rotation", "90", "-i", cw, "-c", "copy", rot)
    i = probe(rot)
    assert i.rotation == 90 and (i.width, i.height) == (384, 512) and i.display_size == (512, 384)
    a = next(iter_frames(i, 25, i.display_size)).astype(float)
    b = next(iter_frames(probe(up), 25, (512, 384))).astype(float)
    assert a.shape == (384, 512, 3)
    assert np.abs(a - b).mean() < 6.0          # upright, same picture
    assert np.abs(a - b[::-1, ::-1]).mean() > 20.0


def test_work_size_bounds_4k():
    assert work_size((3840, 2160), 1280) == (1280, 720)
    assert work_size((1080, 1920), 1280) == (720, 1280)
    assert work_size((512, 512), 1280) == (512, 512)


@pytest.mark.parametrize("name, vcodec, codec", [
    ("clip.mov", ["-c:v", "libx264", "-preset", "ultrafast"], "h264"),
    ("clip.mp4", ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"], "hevc"),
    ("clip.avi", ["-c:v", "mpeg4", "-q:v", "4"], "mpeg4"),
    ("clip.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"], "vp9"),
])
def test_containers_and_codecs(tmp_path, may, name, vcodec, codec):
    p = tmp_path / name
    ff("-i", may, "-t", "1", "-vf", "scale=128:128", *vcodec, "-an", p)
    i = probe(p)
    assert i.video_codec == codec and (i.width, i.height) == (128, 128)
    frames = list(iter_frames(i, 25, (64, 64)))
    assert len(frames) == 25 and frames[10].std() > 10


@pytest.mark.parametrize("fmt", ["raw", "png", "jpg"])
def test_frame_store_round_trip(tmp_path, fmt):
    from capture.framestore import FrameStore, choose_format

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
    frames = [np.kron(base + k, np.ones((4, 4, 1), np.uint8)) for k in range(5)]   # smooth-ish 24x32
    store = FrameStore(tmp_path / "f", fmt, (32, 24))
    with store.writer() as w:
        for f in frames:
            w.append(f)
    tol = {"raw": 0, "png": 0, "jpg": 3.0}[fmt]
    for k in (0, 4, 2):
        assert np.abs(store.read(k).astype(float) - frames[k]).mean() <= tol
    with pytest.raises(CaptureError, match="rerun with --from frames"):
        store.read(7)
    assert choose_format("auto", (1280, 720), 100, 2e9) == "raw"
    assert choose_format("auto", (1280, 720), 7500, 2e9) == "jpg"
