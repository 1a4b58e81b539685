"""Side-aware landmark skinning (avatar.model.skinning): Gaussians on either side of the mouth and eyelid
seams follow their own half, so a tracked opening is rendered at (almost) its size."""
import numpy as np
import torch

from avatar.data import face_model as fm
from avatar.data.face_model import CANONICAL
from avatar.data.motion import MotionSpace
from avatar.model.skinning import NUM_SEAM_POINTS, seam_rig, skin_weights

LM = np.asarray(CANONICAL, np.float64)            # [478,3], metres, y down
IDX = MotionSpace().indices
SIGMA = 0.006


def _opening(rig, upper_ids, lower_ids, moved, amount=0.010):
    """Landmarks `moved` displaced `amount` along -up; returns the rendered opening (mean offset along -up
    of Gaussians 1 mm below `lower_ids` minus that of Gaussians 1 mm above `upper_ids`) / amount."""
    up = torch.as_tensor(LM[fm.FOREHEAD] - LM[fm.CHIN], dtype=torch.float32)
    up = up / up.norm()
    idx = list(IDX)
    disp = torch.zeros(len(idx), 3)
    for i in moved:
        if i in idx:
            disp[idx.index(i)] = -amount * up
    g_up = torch.as_tensor(LM[upper_ids], dtype=torch.float32) + 0.001 * up      # [U,3]
    g_lo = torch.as_tensor(LM[lower_ids], dtype=torch.float32) - 0.001 * up      # [L,3]
    w = skin_weights(torch.cat([g_up, g_lo]), rig["points"], SIGMA, rig["seam_points"], rig["seam_ids"],
                     rig["up"], rig["side"], rig["seam_of"])
    off = -(w @ disp) @ up / amount                                                # [U+L] in units of amount
    return float(off[len(g_up):].mean() - off[:len(g_up)].mean())


def _plain(rig):
    """The same rig without seams (what checkpoints before seams load)."""
    return {**rig, "seam_points": rig["seam_points"][:0], "side": torch.zeros_like(rig["side"])}


def test_rig_shapes_and_halves():
    rig = seam_rig(LM, IDX)
    assert rig["points"].shape == (len(IDX), 3) and rig["seam_points"].shape == (NUM_SEAM_POINTS, 3)
    side = dict(zip(IDX, rig["side"].tolist()))
    assert side[13] == 1 and side[0] == 1 and side[14] == -1 and side[17] == -1
    assert side[159] == 1 and side[145] == -1 and side[61] == 0 and side[152] == 0
    assert torch.allclose(rig["up"], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)    # canonical is y-down


def test_mouth_opens_at_its_tracked_size():
    rig = seam_rig(LM, IDX)
    upper, lower = [13, 82, 312], [14, 87, 317]
    jaw = np.concatenate([fm.LOWER_LIP_INNER, fm.LOWER_LIP_OUTER])      # the lower lip moves as one
    seams = _opening(rig, upper, lower, jaw)
    plain = _opening(_plain(rig), upper, lower, jaw)
    # plain RBF weights blend the two lips (8 mm apart on the canonical face, ~5 mm on real people at
    # rest, about one sigma): the opening shrinks
    assert plain < 0.7, plain                                          # 0.61 on the canonical face
    assert seams > 0.95, seams


def test_eyelids_close_at_their_tracked_size():
    rig = seam_rig(LM, IDX)
    upper, lower = [159, 158, 160], [145, 153, 144]
    # a blink: the upper lid moves down (along -up) onto the lower one; its Gaussians follow it fully and
    # the lower lid's Gaussians stay put, so the "opening" below minus above is -1
    closing = _opening(rig, upper, lower, fm.RIGHT_EYE_UPPER)
    assert closing < -0.85, closing
    assert _opening(_plain(rig), upper, lower, fm.RIGHT_EYE_UPPER) > -0.6


def test_bad_landmarks_name_the_shape():
    try:
        seam_rig(LM[:68], IDX)
    except ValueError as e:
        assert "[478, 3]" in str(e)
    else:
        raise AssertionError("no error")


def _model():
    from avatar.model.avatar import AvatarModel
    from avatar.model.config import AudioEncoderConfig, DeformConfig, GaussianConfig, ModelConfig, TriplaneConfig
    from avatar.model.gaussians import init_gaussians

    torch.manual_seed(0)
    cfg = ModelConfig(gaussians=GaussianConfig(num_face=300, num_mouth=40, num_torso=40),
                      triplane=TriplaneConfig(n_levels=3, log2_hashmap_size=8),
                      audio=AudioEncoderConfig(window=2, dim=8, latent_dim=4, heads=1),
                      deform=DeformConfig(hidden=16), audio_dim=6, motion_dim=3 * len(IDX))
    return AvatarModel(cfg, init_gaussians(cfg.gaussians, LM.astype(np.float32)), None,
                       MotionSpace().to_dict())


def test_model_skins_with_seams_and_reads_checkpoints_without_them():
    from avatar.model.avatar import AvatarModel
    from avatar.data.schema import LABELS

    m = _model()
    m.set_skinning(torch.as_tensor(LM, dtype=torch.float32), 0.01)
    assert m.skin_seam_points.shape == (NUM_SEAM_POINTS, 3) and int((m.skin_side != 0).sum()) > 20
    idx = list(IDX)
    motion = torch.zeros(len(idx), 3)
    motion[idx.index(14), 1] = 1.0                                 # the lower inner lip 10 mm down (y down)
    means = torch.as_tensor(LM[[13, 14]], dtype=torch.float32)
    off = m.skin_offsets(means, torch.full((2,), LABELS["face"]), motion.flatten())
    # the upper lip stays; the lower moves (averaged with its still neighbours 87, 317, 17: ~4 mm)
    assert abs(float(off[0, 1])) < 1e-4 and float(off[1, 1]) > 0.003
    # a checkpoint written before seams (no seam buffers) loads with plain RBF skinning
    d = m.checkpoint_dict()
    for k in ("skin_side", "skin_seam_of", "skin_seam_points", "skin_seam_ids", "skin_up"):
        del d["modules"][k]
    old = AvatarModel.from_checkpoint_dict(d)
    assert int((old.skin_side != 0).sum()) == 0 and torch.equal(old.skin_points, m.skin_points)
    off_old = old.skin_offsets(means, torch.full((2,), LABELS["face"]), motion.flatten())
    assert float(off_old[0, 1]) > 1e-3                              # plain weights: the upper lip drags along
