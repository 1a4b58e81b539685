"""Bad inputs of `avatar drive` / `avatar export` (issue 12), one test per finding: the exit code, the one
line `avatar <command>: error: ...`, and a checksum listing showing that no user file changed. Also the
audio findings (mean downmix; the mp4 carries the original audio at its own rate) and the limits."""
import copy
import subprocess
from pathlib import Path

import numpy as np
import pytest

from _bad_inputs import assert_one_line_error, cli, listing
from test_drive_video import tiny_checkpoint


def ff(*args):
    from avatar.media.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-y", "-v", "error", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("bad_drive")
    from avatar.media.audio import save_wav

    t = np.arange(8000) / 16000
    save_wav(r / "a.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    tiny_checkpoint(r / "good.pt")
    return r


@pytest.fixture
def user(tmp_path):
    """A user's folder with their own files; the listing must be the same after every bad command."""
    u = tmp_path / "myphotos"
    (u / "2024").mkdir(parents=True)
    (u / "vacation.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (u / "2024" / "notes.txt").write_text("my notes\n")
    return u


def drive(capsys, root, *args):
    return cli(capsys, ["drive", *args])


# -------------------------------------------------------------------- output folders are ours or refused
def test_png_dir_of_the_user_is_refused_and_kept(capsys, root, user, tmp_path):
    before = listing(tmp_path)
    code, _, err = drive(capsys, root, "procedural", "--audio", root / "a.wav", "--out", tmp_path / "o.mp4",
                         "--background", "transparent", "--png-dir", user)
    assert_one_line_error(code, err, "drive", "--png-dir", "vacation.jpg", "did not write")
    assert listing(tmp_path) == before  # and no mp4 was written first


def test_png_dir_dot_is_refused_before_the_mp4_is_written(capsys, root, user, monkeypatch):
    monkeypatch.chdir(user)
    before = listing(user)
    code, _, err = drive(capsys, root, "procedural", "--audio", root / "a.wav", "--out", "o.mp4",
                         "--background", "transparent", "--png-dir", ".")
    assert_one_line_error(code, err, "drive", "--png-dir .")
    assert listing(user) == before


def test_png_dir_of_ours_is_rewritten_keeping_unlisted_files(capsys, root, tmp_path):
    frames = tmp_path / "frames"
    args = ["procedural", "--audio", root / "a.wav", "--out", tmp_path / "o.mp4", "--background", "transparent",
            "--png-dir", frames]
    assert drive(capsys, root, *args)[0] == 0
    assert (frames / ".avatar-output.json").is_file() and (frames / "000000.png").is_file()
    (frames / "mine.txt").write_text("a file the user put there")
    assert drive(capsys, root, *args)[0] == 0
    assert (frames / "mine.txt").read_text() == "a file the user put there"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_out_equal_to_the_input_is_refused(capsys, root, tmp_path):
    src = tmp_path / "speech.mp4"
    ff("-f", "lavfi", "-i", "color=c=gray:s=64x64:r=25:d=0.5", "-f", "lavfi", "-i", "sine=f=300:d=0.5",
       "-c:v", "libx264", "-preset", "ultrafast", "-shortest", src)
    before = listing(tmp_path)
    code, _, err = drive(capsys, root, "procedural", "--audio", src, "--out", src)
    assert_one_line_error(code, err, "drive", "also an input")
    assert listing(tmp_path) == before


def test_out_in_an_unwritable_place(capsys, root, tmp_path):
    (tmp_path / "afile").write_text("x")
    before = listing(tmp_path)
    code, _, err = drive(capsys, root, "procedural", "--audio", root / "a.wav", "--out", tmp_path / "afile" / "o.mp4")
    assert_one_line_error(code, err, "drive", "is a file, not a folder")
    code, _, err = drive(capsys, root, "procedural", "--audio", root / "a.wav", "--out", "/proc/o.mp4")
    assert_one_line_error(code, err, "drive", "/proc")
    assert listing(tmp_path) == before


def test_interrupted_drive_leaves_no_temp_folder(capsys, root, tmp_path, monkeypatch):
    from avatar.media import video

    calls = {"n": 0}
    real = video.VideoWriter.write

    def write(self, frame):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, frame)

    monkeypatch.setattr(video.VideoWriter, "write", write)
    out = tmp_path / "w.mp4"
    code, _, err = drive(capsys, root, "procedural", "--audio", root / "a.wav", "--out", out)
    assert code == 130 and err.strip() == "avatar drive: interrupted"
    assert list(tmp_path.iterdir()) == []  # neither w.mp4 nor a hidden .w.mp4.XXXX/ folder


def test_folders_left_by_a_killed_writer_are_removed(capsys, root, tmp_path):
    stale = tmp_path / ".w.mp4.999999999.abcd"  # pid that cannot be running
    stale.mkdir()
    (stale / "video.mp4").write_bytes(b"half")
    (stale / "ffmpeg.log").write_bytes(b"")
    code, _, _ = drive(capsys, root, "procedural", "--audio", root / "a.wav", "--out", tmp_path / "w.mp4")
    assert code == 0 and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.mp4"]


# ------------------------------------------------------------------------------------------- limits
@pytest.mark.parametrize("args, needle", [
    (["--width", "20000", "--height", "20000"], "at most 4096"),
    (["--fps", "100000"], "(0, 120]"),
])
def test_output_size_and_fps_limits(capsys, root, tmp_path, args, needle):
    code, _, err = drive(capsys, root, "procedural", "--audio", root / "a.wav", "--out", tmp_path / "o.mp4", *args)
    assert_one_line_error(code, err, "drive", needle)
    assert list(tmp_path.iterdir()) == []


def test_audio_longer_than_the_documented_maximum(capsys, root, tmp_path, monkeypatch):
    import avatar.media.audio as A

    assert A.MAX_AUDIO_SECONDS == 3600.0  # the documented maximum (avatar.media.audio)
    monkeypatch.setattr(A, "MAX_AUDIO_SECONDS", 0.25)  # a.wav is 0.5 s
    code, _, err = drive(capsys, root, "procedural", "--audio", root / "a.wav", "--out", tmp_path / "o.mp4")
    assert_one_line_error(code, err, "drive", "a.wav", "longer than")
    assert list(tmp_path.iterdir()) == []


def test_progress_lines_when_stderr_is_not_a_terminal(capsys, root, tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_PROGRESS_S", "0.05")
    from avatar.media.audio import save_wav

    save_wav(tmp_path / "long.wav", np.zeros(16000 * 3, np.float32), 16000)
    code, _, err = drive(capsys, root, str(root / "good.pt"), "--audio", tmp_path / "long.wav",
                         "--out", tmp_path / "o.mp4")
    lines = [ln for ln in err.splitlines() if ln.startswith("[drive]") and " frames" in ln]
    assert code == 0 and lines, err
    assert len(lines) < 75  # a line every few seconds (here 0.05 s), never one per frame
    assert "frames" in lines[-1] and "/75" in lines[0]


# ------------------------------------------------------------------------------------ bad checkpoints
def _variant(root: Path, name: str) -> Path:
    import torch

    d = torch.load(root / "good.pt", weights_only=True)
    p = root / f"{name}.pt"
    if name == "empty":
        p.write_bytes(b"")
    elif name == "text":
        p.write_text("this is a text file saved as .pt\n")
    elif name == "pickled_object":
        torch.save({"format": "avatar-checkpoint", "obj": Path("x")}, p)
    else:
        e = copy.deepcopy(d)
        if name == "missing_key":
            del e["gaussians"]
        elif name == "size_mismatch":
            e["modules"]["triplane.tables"] = torch.zeros(3, 10, 2)
        elif name == "per_gaussian_mismatch":
            e["gaussians"]["params.means"] = torch.zeros(10, 3)
        elif name == "huge_config":  # would allocate ~120 GB if the model were built from it
            e["model_config"]["deform"]["hidden"] = 200_000
        torch.save(e, p)
    return p


@pytest.mark.parametrize("name, needle", [
    ("empty", "file is empty"),
    ("text", "not a PyTorch checkpoint file"),
    ("pickled_object", "other than tensors"),
    ("missing_key", "no 'gaussians'"),
    ("size_mismatch", "'triplane.tables' has shape [3, 10, 2]"),
    ("per_gaussian_mismatch", "expected [10, 4]"),
    ("huge_config", "GiB model"),
])
def test_bad_checkpoint_contents(capsys, root, tmp_path, name, needle):
    ck = _variant(root, name)
    before = listing(tmp_path)
    code, _, err = drive(capsys, root, ck, "--audio", root / "a.wav", "--out", tmp_path / "o.mp4")
    line = assert_one_line_error(code, err, "drive", f"{name}.pt", needle)
    assert "weights_only" not in line
    assert listing(tmp_path) == before


def test_drive_data_on_an_unfinished_capture(capsys, root, tmp_path):
    cap = tmp_path / "cap"
    (cap / ".capture" / "stages").mkdir(parents=True)
    before = listing(tmp_path)
    code, _, err = drive(capsys, root, root / "good.pt", "--audio", root / "a.wav", "--out", tmp_path / "o.mp4",
                         "--data", cap)
    line = assert_one_line_error(code, err, "drive", "unfinished", "rerun the same `avatar capture")
    assert "--from write" not in line
    code, _, err = drive(capsys, root, root / "good.pt", "--audio", root / "a.wav", "--out", tmp_path / "o.mp4",
                         "--data", tmp_path / "nope")
    line = assert_one_line_error(code, err, "drive", "nope: does not exist")
    assert "--from" not in line
    assert listing(tmp_path) == before


# ----------------------------------------------------------------------------------------------- audio
def _tone(path, sr, channels, freq=440.0, seconds=1.0, amp=0.5):
    """The same tone in every channel (8 channels: 7.1)."""
    src = ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={sr}:duration={seconds}"]
    if channels == 1:
        ff(*src, "-af", f"volume={amp}", "-c:a", "pcm_s24le", path)
        return
    layout = {2: "stereo", 8: "7.1"}[channels]
    ff(*src, "-filter_complex", f"[0]volume={amp},asplit={channels}" + "".join(f"[c{i}]" for i in range(channels))
       + ";" + "".join(f"[c{i}]" for i in range(channels)) + f"join=inputs={channels}:channel_layout={layout}[o]",
       "-map", "[o]", "-c:a", "pcm_s24le", path)


@pytest.mark.parametrize("channels, sr", [(8, 96000), (2, 48000)])
def test_downmix_is_the_mean_of_the_channels(tmp_path, channels, sr):
    from avatar.media.audio import load_audio

    p = tmp_path / f"tone_{channels}ch.wav"
    _tone(p, sr, channels)
    _tone(tmp_path / "mono.wav", sr, 1)
    wav, mono = load_audio(p), load_audio(tmp_path / "mono.wav")
    assert np.abs(wav).max() <= 0.51  # one channel's level: no sum, no clipping
    rms = lambda x: float(np.sqrt(np.mean(x[1600:-1600] ** 2)))  # noqa: E731
    assert abs(20 * np.log10(rms(wav) / rms(mono))) < 0.1  # the same loudness as one channel (not +3 dB)


def test_mp4_carries_the_original_audio_at_its_own_rate(capsys, root, tmp_path):
    from avatar.media.ffmpeg import ffmpeg_exe
    from avatar.media.probe import probe

    src = tmp_path / "hifi.wav"  # stereo 48 kHz with a 12 kHz tone: above the model's 8 kHz Nyquist
    _tone(src, 48000, 2, freq=12000.0, seconds=1.0, amp=0.3)
    out = tmp_path / "o.mp4"
    assert drive(capsys, root, "procedural", "--audio", src, "--out", out)[0] == 0
    info = probe(out, count_frames=False)
    assert info.audio_sr == 48000 and info.audio_channels == 2
    pcm = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(out), "-map", "0:a:0", "-ac", "1", "-f", "f32le",
                          "pipe:1"], capture_output=True, check=True).stdout
    x = np.frombuffer(pcm, "<f4")[4800:-4800]
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    f = np.fft.rfftfreq(len(x), 1 / 48000)
    assert spec[np.abs(f - 12000) < 100].max() > 50 * np.median(spec)  # the 12 kHz tone survived


def test_truncated_audio_warning_is_whole_words(tmp_path, media):
    import warnings

    from avatar.media.audio import load_audio

    src = (media / "audio" / "vctk_p240_F.mp3").read_bytes()
    p = tmp_path / "cut.mp3"
    p.write_bytes(src[: len(src) // 2] + bytes(2000) + src[len(src) // 2 + 4000:])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        load_audio(p)
    for m in (str(x.message) for x in w):
        tail = m.split(" kept: ", 1)[1]
        assert tail.endswith(" ...") or tail[-1] in ".)]:0123456789" or tail.split()[-1].isalpha(), tail


# ---------------------------------------------------------------------------------------------- export
def test_export_out_is_a_directory(capsys, root, tmp_path):
    (tmp_path / "dir").mkdir()
    before = listing(tmp_path)
    code, _, err = cli(capsys, ["export", "procedural", "--out", tmp_path / "dir"])
    assert_one_line_error(code, err, "export", "is a folder")
    assert listing(tmp_path) == before


def test_export_out_equal_to_the_checkpoint(capsys, root, tmp_path):
    ck = tmp_path / "avatar.ply"  # a checkpoint named .ply: --out would replace it
    ck.write_bytes((root / "good.pt").read_bytes())
    before = listing(tmp_path)
    code, _, err = cli(capsys, ["export", ck, "--out", ck])
    assert_one_line_error(code, err, "export", "also an input")
    assert listing(tmp_path) == before


def test_export_frames_into_a_user_folder(capsys, root, user):
    before = listing(user)
    code, _, err = cli(capsys, ["export", "procedural", "--audio", root / "a.wav", "--frames", user])
    assert_one_line_error(code, err, "export", "--frames", "did not write")
    assert listing(user) == before


def test_ply_has_the_reference_3dgs_layout(capsys, root, tmp_path):
    """What a common splat viewer requires of a 3DGS .ply: one binary little-endian float 'vertex' element
    with x y z, nx ny nz, f_dc_0..2, f_rest_0..44 (degree-3 SH), opacity, scale_0..2, rot_0..3."""
    from plyfile import PlyData

    out = tmp_path / "a.ply"
    assert cli(capsys, ["export", str(root / "good.pt"), "--out", out])[0] == 0
    ply = PlyData.read(str(out))
    assert not ply.text and ply.byte_order == "<"
    v = ply["vertex"]
    names = [p.name for p in v.properties]
    required = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert names == required
    assert all(p.val_dtype in ("f4", "float32", "float") for p in v.properties)
    assert len(v.data) == 660
    rest = np.stack([np.asarray(v[f"f_rest_{i}"]) for i in range(45)], 1)
    assert not rest.any()  # zero-filled: the avatar's colours are view-independent
    for n in required:
        assert np.isfinite(np.asarray(v[n])).all(), n
    q = np.stack([np.asarray(v[f"rot_{i}"]) for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
