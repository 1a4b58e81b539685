"""Per-video-frame audio features.

`frame_features(wav, fps, num_frames, cfg)` turns 16 kHz mono audio into one feature vector per video
frame. The default ("mel") is a log-mel spectrogram computed in pure torch (no torchaudio, no weights):
mel frames every `hop_ms`, then each video frame t (covering [t/fps, (t+1)/fps) seconds) averages the mel
frames whose centres fall in that interval, so any fps works. "hubert"/"wav2vec2" use `transformers` with
weights from a local directory only (`model_path`); a missing package or directory is a clear error.

The scaling of log-mel is fixed (not per utterance), so a streaming caller computing features on chunks
gets the same numbers as an offline one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from avatar.audio.timeline import SAMPLE_RATE, num_frames


class AudioFeatureError(ValueError):
    """Bad audio-feature configuration or input."""


@dataclass
class AudioFeatureConfig:
    """How audio becomes one feature vector per video frame."""

    kind: Literal["mel", "hubert", "wav2vec2"] = "mel"
    """Feature extractor: "mel" (log-mel in torch, no weights) or a self-supervised speech model."""
    n_mels: int = 32
    """Number of mel bands (feature dimension for kind="mel")."""
    n_fft: int = 512
    """FFT size in samples at 16 kHz (512 = 32 ms)."""
    win_ms: float = 25.0
    """Analysis window length in milliseconds (Hann)."""
    hop_ms: float = 10.0
    """Hop between mel frames in milliseconds."""
    fmin: float = 60.0
    """Lowest mel filter edge in Hz."""
    fmax: float = 7600.0
    """Highest mel filter edge in Hz (<= 8000 at 16 kHz)."""
    log_offset: float = 1e-6
    """Added to mel power before the log, so silence has a finite floor."""
    model_path: Optional[str] = None
    """Local directory with transformers weights for kind="hubert"/"wav2vec2" (never downloaded)."""
    layer: int = -1
    """Hidden layer of the speech model used as features (-1 = last)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def dim(self) -> int:
        """Feature dimension D (for the speech models: read from their config on first use)."""
        if self.kind == "mel":
            return self.n_mels
        return _speech_model(self.kind, self.model_path)[0].config.hidden_size


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sr: int, fmin: float, fmax: float) -> torch.Tensor:
    """HTK-style triangular mel filters, area-normalised. Returns [n_fft//2+1, n_mels]."""
    if not 0 <= fmin < fmax <= sr / 2:
        raise AudioFeatureError(f"mel range needs 0 <= fmin < fmax <= {sr / 2}, got fmin={fmin}, fmax={fmax}")
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs[None]) / np.maximum(hi - mid, 1e-9)
    fb = np.clip(np.minimum(up, down), 0.0, None) * (2.0 / (hi - lo))  # [n_mels, n_freqs]
    return torch.from_numpy(fb.T.astype(np.float32))


def log_mel(wav: torch.Tensor, cfg: AudioFeatureConfig) -> torch.Tensor:
    """Log-mel frames of 16 kHz audio. wav [S] -> [T, n_mels], frame j centred at j*hop."""
    hop = int(round(cfg.hop_ms * SAMPLE_RATE / 1000))
    win = int(round(cfg.win_ms * SAMPLE_RATE / 1000))
    if win > cfg.n_fft:
        raise AudioFeatureError(f"win_ms={cfg.win_ms} gives {win} samples > n_fft={cfg.n_fft}")
    x = wav.float()
    if x.numel() < cfg.n_fft // 2 + 1:  # reflect padding needs a few samples
        x = torch.nn.functional.pad(x, (0, cfg.n_fft // 2 + 1 - x.numel()))
    spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=hop, win_length=win,
                      window=torch.hann_window(win), center=True, pad_mode="reflect",
                      return_complex=True)  # [n_freqs, T]
    power = spec.real ** 2 + spec.imag ** 2
    fb = mel_filterbank(cfg.n_mels, cfg.n_fft, SAMPLE_RATE, cfg.fmin, cfg.fmax)
    mel = power.T @ fb  # [T, n_mels]
    # fixed affine scaling to roughly [-1, 1] for speech at normal levels (not per utterance: streamable)
    return (torch.log10(mel + cfg.log_offset) + 3.0) / 3.0


def align_to_frames(feats: torch.Tensor, rate: float, fps: float, num_frames: int) -> torch.Tensor:
    """Average feature frames (at `rate` Hz, frame j centred at j/rate s) over each video frame's interval.

    feats [T, D] -> [num_frames, D]. Video frame t covers [t/fps, (t+1)/fps); intervals containing no
    feature centre take the nearest feature frame; frames past the end of the audio repeat the last one.
    """
    if fps <= 0:
        raise AudioFeatureError(f"fps must be > 0, got {fps}")
    T = feats.shape[0]
    t = torch.arange(num_frames, dtype=torch.float64)
    lo = torch.ceil(t / fps * rate).long().clamp(0, T)
    hi = torch.ceil((t + 1) / fps * rate).long().clamp(0, T)
    csum = torch.cat([torch.zeros(1, feats.shape[1], dtype=torch.float64), feats.double().cumsum(0)])
    count = (hi - lo).clamp(min=1).unsqueeze(1)
    avg = (csum[hi] - csum[lo]) / count
    nearest = torch.round((t + 0.5) / fps * rate).long().clamp(0, T - 1)
    empty = (hi <= lo).unsqueeze(1)
    return torch.where(empty, feats.double()[nearest], avg).float()


def frame_features(wav, fps: float, num_frames: int, cfg: Optional[AudioFeatureConfig] = None) -> torch.Tensor:
    """Audio features aligned to video frames.

    wav: np.float32 or torch [S] mono at 16 kHz (use `avatar.media.audio.load_audio` for files: any rate
    and format in). fps: video frame rate. num_frames: F. Returns torch.float32 [F, D].
    """
    cfg = cfg or AudioFeatureConfig()
    w = torch.as_tensor(np.asarray(wav, dtype=np.float32) if not torch.is_tensor(wav) else wav).float()
    if w.ndim != 1:
        raise AudioFeatureError(f"wav must be mono [S], got shape {tuple(w.shape)}")
    if num_frames < 1:
        raise AudioFeatureError(f"num_frames must be >= 1, got {num_frames}")
    if w.numel() == 0:
        raise AudioFeatureError("wav is empty")
    if not torch.isfinite(w).all():
        raise AudioFeatureError("wav contains NaN or Inf samples")
    if cfg.kind == "mel":
        mel = log_mel(w, cfg)
        return align_to_frames(mel, 1000.0 / cfg.hop_ms, fps, num_frames)
    if cfg.kind in ("hubert", "wav2vec2"):
        model, extractor = _speech_model(cfg.kind, cfg.model_path)
        inputs = extractor(w.numpy(), sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.no_grad():
            out = model(inputs.input_values, output_hidden_states=True)
        hidden = out.hidden_states[cfg.layer][0]  # [T, D] at 50 Hz (20 ms stride)
        return align_to_frames(hidden, 50.0, fps, num_frames)
    raise AudioFeatureError(f"AudioFeatureConfig.kind must be 'mel', 'hubert' or 'wav2vec2', got {cfg.kind!r}")


_MODEL_CACHE: dict = {}


def _speech_model(kind: str, model_path: Optional[str]):
    """Load a local transformers speech model once; clear errors when that cannot work offline."""
    key = (kind, model_path)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        raise AudioFeatureError(
            f"audio features kind={kind!r} need the 'transformers' package (pip install transformers) "
            f"and local weights via model_path; or use kind='mel', which needs neither") from e
    if not model_path or not Path(model_path).is_dir():
        raise AudioFeatureError(
            f"audio features kind={kind!r} need model_path = a local directory with the model weights "
            f"(config.json + weights); got {model_path!r}. Nothing is downloaded.")
    from transformers import AutoFeatureExtractor, AutoModel
    model = AutoModel.from_pretrained(model_path, local_files_only=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(model_path, local_files_only=True)
    _MODEL_CACHE[key] = (model, extractor)
    return _MODEL_CACHE[key]


def feature_windows(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Sliding windows of ±k frames, edge-padded. feats [F, D] -> [F, 2k+1, D]; row t centred on frame t."""
    if feats.ndim != 2:
        raise AudioFeatureError(f"feats must be [F, D], got shape {tuple(feats.shape)}")
    if k < 0:
        raise AudioFeatureError(f"window half-width k must be >= 0, got {k}")
    F = feats.shape[0]
    idx = (torch.arange(F)[:, None] + torch.arange(-k, k + 1)[None]).clamp(0, F - 1)
    return feats[idx]


def file_features(path, fps: float, num_frames: int, cfg: Optional[AudioFeatureConfig] = None) -> torch.Tensor:
    """frame_features of an audio/video file (any format ffmpeg reads, any sample rate)."""
    from avatar.media.audio import load_audio

    return frame_features(load_audio(path, sr=SAMPLE_RATE), fps, num_frames, cfg)


def num_frames_for(num_samples: int, fps: float) -> int:
    """Number of video frames covering `num_samples` of 16 kHz audio at `fps` (rounded up)."""
    return max(1, num_frames(num_samples, fps))
