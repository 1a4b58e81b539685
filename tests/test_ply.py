"""Round trip of the standard 3DGS .ply layout, and its errors."""
import numpy as np
import pytest

from avatar.io import PlyError, SplatData, read_ply, write_ply


def _data(N=50, K=16, seed=0):
    r = np.random.default_rng(seed)
    f = lambda *s: r.standard_normal(s).astype(np.float32)
    return SplatData(means=f(N, 3), quats=f(N, 4), log_scales=f(N, 3), opacity_logits=f(N), sh=f(N, K, 3))


@pytest.mark.parametrize("K", [1, 4, 9, 16])
def test_round_trip_exact(tmp_path, K):
    d = _data(K=K)
    p = tmp_path / "splats.ply"
    write_ply(p, d)
    back = read_ply(p)
    assert back.sh_degree == int(np.sqrt(K)) - 1
    for k in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(getattr(back, k), getattr(d, k), err_msg=k)
    assert not list(tmp_path.glob("*.tmp"))            # atomic write leaves no temp file


def test_standard_property_layout(tmp_path):
    from plyfile import PlyData

    d = _data(N=3, K=4)
    p = tmp_path / "s.ply"
    write_ply(p, d)
    v = PlyData.read(str(p))["vertex"]
    names = [q.name for q in v.properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:18] == [f"f_rest_{i}" for i in range(9)]
    assert names[18:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    # f_rest is channel-major: f_rest_{c*(K-1) + k-1} = sh[:, k, c]
    assert v["f_rest_4"][1] == d.sh[1, 2, 1]           # c=1, k=2 -> index 1*3 + 1
    assert v["rot_0"][2] == d.quats[2, 0]              # w first


def test_errors_name_file_and_field(tmp_path):
    with pytest.raises(PlyError, match="no such file"):
        read_ply(tmp_path / "missing.ply")
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply")
    with pytest.raises(PlyError, match="bad.ply"):
        read_ply(bad)
    from plyfile import PlyData, PlyElement
    rec = np.zeros(2, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    pts = tmp_path / "points.ply"
    PlyData([PlyElement.describe(rec, "vertex")]).write(str(pts))
    with pytest.raises(PlyError, match="'f_dc_0' missing"):
        read_ply(pts)
    with pytest.raises(ValueError, match="SplatData.quats must have shape"):
        SplatData(means=np.zeros((2, 3)), quats=np.zeros((2, 3)), log_scales=np.zeros((2, 3)),
                  opacity_logits=np.zeros(2), sh=np.zeros((2, 1, 3)))
