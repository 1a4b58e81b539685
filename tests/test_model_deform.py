"""Deformation: zero-initialised heads, region gating, and the two-layer (mouth behind face) composite."""
import os

import torch

from avatar.model.avatar import AvatarModel
from avatar.model.config import AudioEncoderConfig, DeformConfig, GaussianConfig, ModelConfig, TriplaneConfig
from avatar.data.schema import LABELS
from avatar.model.gaussians import init_gaussians

BACKEND = os.environ.get("AVATAR_TEST_BACKEND", "auto")


def small_model(use_motion=True):
    torch.manual_seed(0)
    cfg = ModelConfig(gaussians=GaussianConfig(num_face=300, num_mouth=40, num_torso=40),
                      triplane=TriplaneConfig(n_levels=3, log2_hashmap_size=8),
                      audio=AudioEncoderConfig(window=2, dim=8, latent_dim=4, heads=1),
                      deform=DeformConfig(hidden=16, use_motion=use_motion, deform_color=True),
                      audio_dim=6, motion_dim=3)
    g = init_gaussians(cfg.gaussians, None)
    return AvatarModel(cfg, g)


def camera(size=32):
    V = torch.eye(4)
    V[2, 3] = 0.6
    f = 0.75 * size * 0.6 / 0.25
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return V[None], K[None]


def test_untrained_deformation_renders_canonical_avatar_exactly():
    m = small_model().eval()
    V, K = camera()
    bg = torch.rand(32, 32, 3)
    window = torch.randn(5, 6) * 3
    deformed = m.render_frame(V, K, 32, 32, audio_window=window, motion=torch.randn(3), blink=0.7,
                              background=bg, backend=BACKEND)
    canonical = m.render(V, K, 32, 32, background=bg, use_deform=False, backend=BACKEND)
    assert torch.equal(deformed[0], canonical["rgb"].clamp(0, 1))
    assert torch.equal(deformed[1], canonical["alpha"])
    posed = m.deformed(m.encode_audio(window), torch.randn(3), torch.tensor(1.0))
    assert torch.equal(posed["means"], m.gaussians.means) and (posed["d_means"] == 0).all()
    assert float(canonical["alpha"].detach().max()) > 0.5  # the canonical avatar is actually in view


def test_deformation_learns_and_gate_is_per_region():
    m = small_model()
    V, K = camera()
    lat = torch.randn(4)
    out = m.render(V, K, 32, 32, audio_latent=lat, use_deform=True, backend=BACKEND)
    out["rgb"].sum().backward()
    assert m.face_deform.head.weight.grad.abs().sum() > 0  # gradient reaches the zero-initialised head
    assert m.mouth_deform.head.weight.grad.abs().sum() > 0
    # after a change to the heads the avatar moves, and the mouth branch drives only mouth Gaussians
    with torch.no_grad():
        m.mouth_deform.head.bias[:3] = 1.0
    posed = m.deformed(lat)
    mouth = m.gaussians.labels == LABELS["mouth"]
    assert (posed["d_means"][mouth].abs() > 0).all() and (posed["d_means"][~mouth] == 0).all()


def test_mouth_layer_is_composited_behind_face():
    m = small_model(use_motion=False).eval()
    V, K = camera()
    with torch.no_grad():  # mouth Gaussians bright red, and moved *in front of* the face in depth
        m.gaussians.params["colors"][:] = -5.0
        mouth = m.gaussians.labels == LABELS["mouth"]
        m.gaussians.params["colors"][mouth, 0] = 5.0
        m.gaussians.params["means"][mouth] = torch.tensor([0.0, 0.0, -0.3]) + 0.01 * torch.randn(int(mouth.sum()), 3)
        m.gaussians.params["opacities"][:] = 5.0
    m.invalidate_cache()
    rgb, alpha, cov = m.render_frame(V, K, 32, 32, background=torch.zeros(3), backend=BACKEND, return_mouth=True)
    c = rgb[0, 14:18, 14:18]
    assert float(c[..., 0].max()) < 0.2  # the face layer hides the mouth layer even though it is nearer
    assert float(cov[0, 14:18, 14:18].max()) < 0.1


def test_torso_stays_fixed_in_the_capture_camera_while_the_head_turns():
    from avatar.model.avatar import _move_region

    m = small_model()
    V_ref = camera()[0][0]
    assert m.torso_transform_for(V_ref) is None  # no reference pose set: torso rigid with the head
    with torch.no_grad():
        m.torso_ref.copy_(V_ref)
    c, s = torch.cos(torch.tensor(0.3)), torch.sin(torch.tensor(0.3))
    R = torch.tensor([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])
    V_t = V_ref.clone()
    V_t[:3, :3] = R  # the head turned by 0.3 rad in front of the same camera
    posed = _move_region(m.deformed(use_deform=False), m.gaussians.labels == LABELS["torso"], m.torso_transform_for(V_t))
    torso = m.gaussians.labels == LABELS["torso"]
    cam_t = posed["means"][torso] @ V_t[:3, :3].T + V_t[:3, 3]
    cam_ref = m.gaussians.means[torso] @ V_ref[:3, :3].T + V_ref[:3, 3]
    assert torch.allclose(cam_t, cam_ref, atol=1e-5)
    assert torch.equal(posed["means"][~torso], m.gaussians.means[~torso])
    # rotations follow: the torso Gaussians' world orientation is rotated by R^T (camera-fixed)
    from avatar.data.cameras import quat_to_rotmat

    Rq = quat_to_rotmat(torch.nn.functional.normalize(posed["quats"][torso][:1], dim=-1))[0]
    assert torch.allclose(Rq, R.T, atol=1e-5)
