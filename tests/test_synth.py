"""avatar.synth.video (`avatar synth`): procedural talking-head clips with ground truth."""
import json

import numpy as np
import pytest

from avatar.synth.video import SpeechStyle, per_frame_mean, synth_speech
from avatar.commands.synth import Synth

GT_KEYS = {"fps", "width", "height", "K", "head_pose", "viewmats", "mouth_open", "blink", "landmarks2d",
           "landmarks3d", "audio_rms", "head_to_world", "camera_c2w", "camera_index",
           "style_mouth_amplitude", "style_mouth_asymmetry", "style_syllable_rate", "style_pitch_hz",
           "style_head_scale", "style_skin", "style_hair", "style_blink_interval"}


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    """A 2.4 s mono clip at 192x192 (large enough for mediapipe)."""
    out = tmp_path_factory.mktemp("synth") / "mono"
    info = Synth(out=out, seconds=2.4, width=192, height=192, seed=3).run()
    return out, info


def test_mono_outputs_frames_and_durations(mono):
    from avatar.media.audio import load_audio
    from avatar.media.probe import probe
    from avatar.media.video import read_frames

    out, info = mono
    F = 60
    assert info[0]["frames"] == F
    gt = np.load(out / "ground_truth.npz")
    assert GT_KEYS <= set(gt.files)
    assert float(gt["fps"]) == 25.0 and int(gt["width"]) == 192
    shapes = {"K": (F, 3, 3), "head_pose": (F, 4, 4), "mouth_open": (F,), "blink": (F,),
              "landmarks2d": (F, 478, 2), "landmarks3d": (F, 478, 3), "audio_rms": (F,)}
    for k, s in shapes.items():
        assert gt[k].shape == s, k
    frames = list(read_frames(out / "video.mp4"))
    assert len(frames) == F and frames[0].shape == (192, 192, 3)
    p = probe(out / "video.mp4")
    assert p.video_codec == "h264" and p.has_audio and p.duration == pytest.approx(2.4, abs=0.04)
    wav = load_audio(out / "audio.wav")
    assert len(wav) == 2.4 * 16000
    assert abs(len(load_audio(out / "video.mp4")) - len(wav)) < 16000 / 25
    masks = sorted((out / "gt_masks").glob("*.png"))
    assert len(masks) == F
    # head_pose is camera-to-head: its inverse maps the head-frame landmarks onto landmarks2d
    vm = np.linalg.inv(gt["head_pose"])
    cam = gt["landmarks3d"] @ np.swapaxes(vm[:, :3, :3], 1, 2) + vm[:, None, :3, 3]
    uv = cam @ np.swapaxes(gt["K"], 1, 2)
    np.testing.assert_allclose(uv[..., :2] / uv[..., 2:], gt["landmarks2d"], atol=0.01)
    # the pose moves and stays within the stated bounds (yaw <= 18 deg)
    R = gt["head_to_world"][:, :3, :3]
    yaw = np.degrees(np.arctan2(R[:, 0, 2], R[:, 2, 2]))
    assert np.abs(yaw).max() <= 18.5 and np.ptp(yaw) > 0.5


def test_masks_match_the_rendered_frame(mono):
    import cv2

    from avatar.media.video import read_frames

    out, _ = mono
    gt = np.load(out / "ground_truth.npz")
    f = int(np.argmax(gt["mouth_open"]))
    m = cv2.imread(str(out / "gt_masks" / f"{f:06d}.png"), cv2.IMREAD_UNCHANGED)
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1, 2, 3, 4} and {0, 1, 2, 4} <= set(np.unique(m))
    frame = [x for i, x in enumerate(read_frames(out / "video.mp4")) if i == f][0].astype(float)
    bg = frame[m == 0].mean(0)
    np.testing.assert_allclose(bg, [0.62 * 255, 0.70 * 255, 0.76 * 255], atol=6)
    # the face pixels are around the projected landmarks; the mouth interior lies between the inner lips
    lm = gt["landmarks2d"][f]
    face_px = np.argwhere(m == 2)[:, ::-1] + 0.5
    assert np.linalg.norm(face_px.mean(0) - lm.mean(0)) < 8
    if gt["mouth_open"][f] > 0.4:
        mouth = np.argwhere(m == 3)[:, ::-1] + 0.5
        assert len(mouth) > 10
        # teeth and the dark cavity: not skin-coloured
        assert np.abs(frame[m == 3].mean(0) - frame[m == 2].mean(0)).max() > 15
        assert lm[13, 1] - 2 < mouth[:, 1].mean() < lm[14, 1] + 2


def test_audio_envelope_drives_the_mouth(mono):
    out, _ = mono
    gt = np.load(out / "ground_truth.npz")
    r = np.corrcoef(gt["audio_rms"], gt["mouth_open"])[0, 1]
    assert r > 0.6
    # longer synthetic speech (no rendering): envelope vs mouth opening per 40 ms frame
    wav, mouth = synth_speech(20.0, SpeechStyle(), np.random.default_rng(0))
    rms = np.sqrt(per_frame_mean(wav.astype(np.float64) ** 2, 500, 25.0))
    mo = per_frame_mean(mouth, 500, 25.0)
    assert np.corrcoef(rms, mo)[0, 1] > 0.7
    silent = mo < 0.01
    assert 0.1 < silent.mean() < 0.6                     # pauses exist, speech dominates
    assert rms[silent].mean() < 0.25 * rms[~silent].mean()


def test_syllable_rate_style_is_audible():
    def rate(r):
        _, mouth = synth_speech(30.0, SpeechStyle(syllable_rate=r, phrase_syllables=8), np.random.default_rng(1))
        on = mouth > 0.05
        onsets = np.count_nonzero(on[1:] & ~on[:-1])
        return onsets / (np.count_nonzero(on) / 16000)   # syllables per second of speech
    slow, fast = rate(3.0), rate(6.0)
    assert slow == pytest.approx(3.0, rel=0.3) and fast == pytest.approx(6.0, rel=0.3)


def test_mediapipe_sees_the_synthetic_face(mono):
    mp = pytest.importorskip("mediapipe")
    from avatar.data import face_model as fm
    from avatar.media.video import read_frames

    out, _ = mono
    gt = np.load(out / "ground_truth.npz")
    err, mo = [], []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True) as det:
        for i, im in enumerate(read_frames(out / "video.mp4")):
            res = det.process(im)
            if not res.multi_face_landmarks:
                continue
            p = np.array([(q.x * 192, q.y * 192) for q in res.multi_face_landmarks[0].landmark])
            err.append(np.linalg.norm(p - gt["landmarks2d"][i], axis=1).mean())
            mo.append((fm.mouth_openness(p), gt["mouth_open"][i]))
    assert len(err) >= 0.95 * 60
    assert np.mean(err) < 3.0                          # px at 192x192 (measured ~1.5)
    mo = np.array(mo)
    assert np.corrcoef(mo[:, 0], mo[:, 1])[0, 1] > 0.8


def test_determinism_by_seed(tmp_path):
    a = Synth(out=tmp_path / "a", seconds=0.6, width=64, height=64, seed=7, masks=False)
    a.run()
    Synth(out=tmp_path / "b", seconds=0.6, width=64, height=64, seed=7, masks=False).run()
    Synth(out=tmp_path / "c", seconds=0.6, width=64, height=64, seed=8, masks=False).run()
    ga, gb, gc = (np.load(tmp_path / n / "ground_truth.npz") for n in "abc")
    for k in ga.files:
        np.testing.assert_array_equal(ga[k], gb[k], err_msg=k)
    assert (tmp_path / "a" / "audio.wav").read_bytes() == (tmp_path / "b" / "audio.wav").read_bytes()
    assert (tmp_path / "a" / "audio.wav").read_bytes() != (tmp_path / "c" / "audio.wav").read_bytes()
    assert not np.array_equal(ga["head_pose"], gc["head_pose"])
    # a non-empty output folder is refused without --overwrite
    assert a.main() == 2
    with pytest.raises(ValueError, match="not empty"):
        a.run()
    with pytest.raises(ValueError, match="even"):
        Synth(out=tmp_path / "d", width=63).run()


def test_identities_have_distinct_known_styles(tmp_path):
    from avatar.data import face_model as fm

    Synth(out=tmp_path, identities=3, seconds=1.6, width=64, height=64, seed=0, masks=False).run()
    dirs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert dirs == ["id_00", "id_01", "id_02"]
    gts = [np.load(tmp_path / d / "ground_truth.npz") for d in dirs]
    for k in ("style_mouth_amplitude", "style_syllable_rate", "style_pitch_hz", "style_mouth_asymmetry"):
        vals = [float(g[k]) for g in gts]
        assert len(set(vals)) == 3, k
    assert len({tuple(g["style_skin"].round(3)) for g in gts}) == 3 or \
        len({tuple(g["style_hair"].round(3)) for g in gts}) == 3
    checked = 0
    for g in gts:
        # the landmark mouth opening per unit of mouth_open scales with the identity's amplitude
        mo = fm.mouth_openness(g["landmarks3d"])
        sel = g["mouth_open"] > 0.2
        if sel.sum() < 3:
            continue
        gain = np.median((mo[sel] - mo[~sel].min()) / g["mouth_open"][sel])
        assert gain == pytest.approx(0.3 * float(g["style_mouth_amplitude"]), rel=0.35)
        checked += 1
        # head shape scale shows in the landmarks
        width = np.ptp(g["landmarks3d"][0][fm.FACE_OVAL, 0])
        assert width / float(g["style_head_scale"][0]) == pytest.approx(0.139, rel=0.02)
    assert checked >= 2
    assert (tmp_path / "id_01" / "video.mp4").is_file() and (tmp_path / "id_01" / "audio.wav").is_file()
    info = json.loads((tmp_path / "id_02" / "synth.json").read_text())
    assert info["head_style"]["mouth_amplitude"] == pytest.approx(float(gts[2]["style_mouth_amplitude"]))


def test_multiview_rig_is_consistent(tmp_path):
    Synth(out=tmp_path, views=3, seconds=0.4, width=64, height=64, seed=1, masks=False).run()
    meta = json.loads((tmp_path / "cameras" / "transforms.json").read_text())
    assert [f["file_path"] for f in meta["frames"]] == ["cam00/cam00.mp4", "cam01/cam01.mp4", "cam02/cam02.mp4"]
    from avatar.data.cameras import viewmat_from_opengl_c2w

    g0 = np.load(tmp_path / "ground_truth.npz")
    for c, fr in enumerate(meta["frames"]):
        g = np.load(tmp_path / "cameras" / f"cam{c:02d}" / "ground_truth.npz")
        assert (tmp_path / "cameras" / fr["file_path"]).is_file()
        V = viewmat_from_opengl_c2w(np.array(fr["transform_matrix"]))
        # world-to-camera x head-to-world = what was rendered (head-to-camera)
        np.testing.assert_allclose(V @ g["head_to_world"], g["viewmats"], atol=1e-5)
        np.testing.assert_allclose(g["landmarks3d"], g0["landmarks3d"])
        assert fr["fl_x"] == pytest.approx(float(g["K"][0, 0, 0]))
    np.testing.assert_array_equal(g0["landmarks2d"],
                                  np.load(tmp_path / "cameras" / "cam00" / "ground_truth.npz")["landmarks2d"])
    # camera 0 is frontal, the others look from the sides
    yaw = [np.degrees(np.arctan2(-np.array(f["transform_matrix"])[0, 2], -np.array(f["transform_matrix"])[2, 2]))
           for f in meta["frames"]]
    assert abs(yaw[0]) < 1 and abs(abs(yaw[1]) - 25) < 1 and abs(abs(yaw[2]) - 25) < 1


def test_cli_registration_and_options():
    import tyro

    from avatar.cli import COMMANDS

    assert COMMANDS["synth"] == ("avatar.commands.synth", "Synth")
    s = tyro.cli(Synth, args=["--out", "x", "--views", "3", "--identities", "2", "--seconds", "4",
                              "--no-masks"])
    assert (s.views, s.identities, s.seconds, s.masks) == (3, 2, 4.0, False)
    assert (s.width, s.height, s.fps) == (256, 256, 25.0)
    for bad, match in ((dict(views=0), "views"), (dict(fps=0), "fps"), (dict(seconds=0.1), "seconds"),
                       (dict(pose_scale=-1), "pose-scale")):
        with pytest.raises(ValueError, match=match):
            Synth(out="unused", **bad)._check()
