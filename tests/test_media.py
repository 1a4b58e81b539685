"""avatar.media: ffmpeg discovery, audio decode of every shared format, wav out, mp4 writer and reader."""
import wave

import numpy as np
import pytest

from avatar.media.audio import AudioError, load_audio, save_wav
from avatar.media.ffmpeg import MediaError, ffmpeg_exe
from avatar.media.probe import probe
from avatar.media.video import VideoError, VideoWriter, read_frames

# file -> (duration s, per the media README / container), format note
AUDIO = {
    "audio/librispeech_198-209-0000_F.ogg": 13.91,   # Vorbis 16 kHz mono
    "audio/fleurs_de_000.ogg": 17.94,                # Opus 48 kHz
    "audio/jfk.flac": 11.0,                          # FLAC 44.1 kHz 24-bit stereo
    "audio/vctk_p240_F.mp3": 4.94,                   # MP3 24 kHz
    "video/may_5s.mp4": 5.0,                         # AAC 48 kHz stereo inside mp4
}


def test_ffmpeg_exe_exists():
    import os

    assert os.access(ffmpeg_exe(), os.X_OK)


@pytest.mark.parametrize("rel", sorted(AUDIO))
def test_load_audio_formats(media, rel):
    wav = load_audio(media / rel)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) / 16000 == pytest.approx(AUDIO[rel], abs=0.03)
    rms = float(np.sqrt(np.mean(wav ** 2)))
    assert 0.005 < rms < 0.5 and np.abs(wav).max() < 1.5
    assert abs(float(wav.mean())) < 0.01  # no DC offset from a bad conversion


def test_load_audio_resample_and_downmix(media):
    f = media / "audio/jfk.flac"  # 24-bit stereo 44.1 kHz
    a16 = load_audio(f)
    a8 = load_audio(f, sr=8000)
    assert len(a8) == pytest.approx(len(a16) / 2, abs=2)
    # same signal: per-20ms RMS envelopes agree
    e16 = np.sqrt((a16[: len(a16) // 320 * 320].reshape(-1, 320) ** 2).mean(1))
    e8 = np.sqrt((a8[: len(a8) // 160 * 160].reshape(-1, 160) ** 2).mean(1))
    n = min(len(e16), len(e8))
    assert np.corrcoef(e16[:n], e8[:n])[0, 1] > 0.99


def test_save_wav_roundtrip(tmp_path):
    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    p = tmp_path / "sub" / "a.wav"
    save_wav(p, x, 16000)
    with wave.open(str(p)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 16000)
    y = load_audio(p)
    assert np.abs(y - x).max() < 2e-4
    assert not list(p.parent.glob(".*tmp*"))  # atomic write leaves no temp file
    with pytest.raises(AudioError, match="mono"):
        save_wav(p, np.zeros((2, 10), np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        save_wav(p, np.array([np.nan], np.float32), 16000)


def test_audio_errors(tmp_path, media):
    with pytest.raises(AudioError, match="not found") as e:
        load_audio(tmp_path / "nope.wav")
    assert "nope.wav" in str(e.value) and isinstance(e.value, ValueError)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    corrupt = tmp_path / "corrupt.ogg"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="corrupt.ogg"):
        load_audio(corrupt)
    # a video without audio: clear error naming the missing stream
    silent = tmp_path / "silent.mp4"
    with VideoWriter(silent, 25, 32, 32) as w:
        for i in range(5):
            w.write(np.full((32, 32, 3), i * 40, np.uint8))
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(silent)
    # an image has no audio either
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(media / "image/obama_official_portrait.jpg")


def test_truncated_audio_decodes_prefix(tmp_path, media):
    src = (media / "audio/librispeech_198-209-0000_F.ogg").read_bytes()
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(src[: len(src) // 2])
    import warnings

    with warnings.catch_warnings():  # ffmpeg may or may not flag a cut mid-page; the prefix is kept
        warnings.simplefilter("ignore")
        wav = load_audio(cut)
    assert 3.0 < len(wav) / 16000 < 11.0  # roughly the first half of 13.9 s
    full = load_audio(media / "audio/librispeech_198-209-0000_F.ogg")
    n = len(wav) - 1600
    assert np.abs(wav[:n] - full[:n]).max() < 1e-3  # the prefix is the same audio


def test_video_writer_roundtrip_with_audio(tmp_path, media):
    frames = []
    for i, f in enumerate(read_frames(media / "video/may_5s.mp4")):
        if i >= 40:
            break
        frames.append(f)
    assert frames[0].shape == (512, 512, 3) and frames[0].dtype == np.uint8
    audio = load_audio(media / "video/may_5s.mp4")
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, 512, 512, audio=audio, sr=16000) as w:  # audio longer than video: trimmed
        for k, f in enumerate(frames):
            w.write(f if k % 2 else f.astype(np.float32) / 255.0)  # uint8 and float frames
    info = probe(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert (info.width, info.height, info.fps, info.num_frames) == (512, 512, 25.0, 40)
    back = list(read_frames(out))
    assert len(back) == 40
    psnr = 10 * np.log10(255 ** 2 / np.mean((back[7].astype(float) - frames[7].astype(float)) ** 2))
    assert psnr > 35
    a = load_audio(out)
    assert abs(len(a) / 16000 - 40 / 25) < 1 / 25  # durations agree to the frame
    n = min(len(a), int(1.6 * 16000))
    assert np.corrcoef(a[:n], audio[:n])[0, 1] > 0.9  # same audio, in sync (no offset)
    # audio shorter than the video: zero-padded to the video's length
    out2 = tmp_path / "pad.mp4"
    with VideoWriter(out2, 30, 64, 48, audio=np.full(1600, 0.3, np.float32)) as w:
        for _ in range(30):
            w.write(np.zeros((48, 64, 3), np.uint8))
    a2 = load_audio(out2)
    assert abs(len(a2) / 16000 - 1.0) < 1 / 30
    assert np.abs(a2[8000:]).max() < 0.02
    frames2 = list(read_frames(out2))
    assert len(frames2) == 30 and frames2[0].shape == (48, 64, 3)


def test_video_writer_errors_and_atomicity(tmp_path):
    with pytest.raises(VideoError, match="even"):
        VideoWriter(tmp_path / "a.mp4", 25, 33, 32)
    with pytest.raises(VideoError, match="fps"):
        VideoWriter(tmp_path / "a.mp4", 0, 32, 32)
    out = tmp_path / "b.mp4"
    with pytest.raises(VideoError, match=r"shape \(16, 16, 3\)"):
        with VideoWriter(out, 25, 32, 32) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            w.write(np.zeros((16, 16, 3), np.uint8))
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing partial left behind
    with pytest.raises(VideoError, match="no frames"):
        VideoWriter(tmp_path / "c.mp4", 25, 32, 32).close()
    assert list(tmp_path.iterdir()) == []


def test_read_frames_errors(tmp_path, media):
    with pytest.raises(VideoError, match="not found"):
        read_frames(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        read_frames(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01garbage" * 1000)
    with pytest.raises(VideoError, match="junk.mp4"):
        list(read_frames(tmp_path / "junk.mp4"))
    with pytest.raises(VideoError, match="no video stream"):
        read_frames(media / "audio/jfk.flac")
    # truncated mp4 with the index at the end (the usual camera layout): clear error naming the file
    src = (media / "video/may_5s.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(VideoError, match=r"cut.mp4.*truncated"):
        read_frames(cut)
    # truncated "faststart" mp4 (index first): the frames before the cut, and a warning naming the file
    fs = tmp_path / "fs.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(fs, 25, 64, 64) as w:
        for _ in range(50):
            w.write(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = fs.read_bytes()
    cut2 = tmp_path / "cut2.mp4"
    cut2.write_bytes(data[: len(data) * 6 // 10])
    with pytest.warns(UserWarning, match="cut2.mp4"):
        n = sum(1 for _ in read_frames(cut2))
    assert 10 < n < 50
    assert issubclass(VideoError, MediaError) and issubclass(AudioError, ValueError)


@pytest.mark.parametrize("ext,codec", [("wav", ["-c:a", "pcm_s24le"]), ("m4a", ["-c:a", "aac"]),
                                       ("aac", ["-c:a", "aac"]), ("mp3", ["-c:a", "libmp3lame"]),
                                       ("opus", ["-c:a", "libopus"]), ("flac", ["-c:a", "flac"])])
def test_load_audio_generated_formats(tmp_path, ext, codec):
    """48 kHz stereo (24-bit for wav) in each container/codec -> 16 kHz mono with the right pitch."""
    from avatar.media.ffmpeg import run_ffmpeg

    src = tmp_path / f"tone.{ext}"
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1.5",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1.5",
                "-filter_complex", "[0:a][1:a]amerge=inputs=2[a]", "-map", "[a]", "-ac", "2", *codec,
                str(src)], path=src)
    wav = load_audio(src)
    assert wav.dtype == np.float32 and len(wav) / 16000 == pytest.approx(1.5, abs=0.06)
    seg = wav[4000:20000]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    assert np.fft.rfftfreq(len(seg), 1 / 16000)[spec.argmax()] == pytest.approx(440, abs=3)
