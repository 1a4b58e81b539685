"""Derive avatar/data/canonical_face.npy (+ canonical_face_tris.npy) from real faces with mediapipe.

Run once (the outputs are committed):  .venv/bin/python scripts/make_canonical_face.py [--media DIR]

What it does, step by step:
1. Runs mediapipe FaceMesh (refine_landmarks=True: 478 points incl. iris centres) on every frame of
   video/may_5s.mp4 and on image/*.jpg|png in the shared media folder (all faces found there).
2. Converts each detection to pixel-unit 3D points (x*W, y*H, z*W; mediapipe's z has x's scale, and
   its axes already are OpenCV-like: x right, y down, z away from the camera).
3. Generalised Procrustes (similarity) alignment of every detection to the running mean; detections
   are averaged per identity first (so the 125 video frames count as one person), then identities.
4. Mirror-symmetrises the mean (pairs found by optimal assignment of the x-mirrored shape), puts it in
   the head frame: x from the subject's right iris to the left iris, y down (forehead -> chin,
   orthogonalised), z = x cross y (into the head); inter-pupil distance 0.063 m; origin so that the
   nose tip (landmark 1) is at (0, 0, -0.10) m.
5. Extracts mediapipe's face tessellation triangles (3-cliques of FACEMESH_TESSELATION, oriented so
   the normals face the camera) for the procedural head.
"""
from __future__ import annotations

import argparse
import glob
import itertools
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IPD_M = 0.063          # adult mean inter-pupillary distance (metres)
NOSE_TIP_Z_M = -0.10   # nose tip in front of the head centre (the contract's head frame)
RIGHT_IRIS, LEFT_IRIS, NOSE_TIP, FOREHEAD, CHIN = 468, 473, 1, 10, 152


def detect(media: Path) -> dict[str, list[np.ndarray]]:
    """identity name -> list of [478,3] pixel-unit landmark arrays."""
    import cv2
    import mediapipe as mp

    out: dict[str, list[np.ndarray]] = {}

    def to_px(res, w, h):
        pts = []
        for face in res.multi_face_landmarks or []:
            a = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], np.float64)
            pts.append(a)
        return pts

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                         refine_landmarks=True) as fm:
        cap = cv2.VideoCapture(str(media / "video" / "may_5s.mp4"))
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            h, w = bgr.shape[:2]
            res = fm.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            out.setdefault("may_5s", []).extend(to_px(res, w, h))
        cap.release()
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4,
                                         refine_landmarks=True) as fm:
        for f in sorted(glob.glob(str(media / "image" / "*.jpg")) + glob.glob(str(media / "image" / "*.png"))):
            bgr = cv2.imread(f)
            h, w = bgr.shape[:2]
            res = fm.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            for k, a in enumerate(to_px(res, w, h)):
                out[f"{Path(f).stem}#{k}"] = [a]
    return out


def procrustes(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Similarity transform of src [N,3] onto dst [N,3] (Umeyama, no reflection); returns aligned src."""
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    u, sig, vt = np.linalg.svd(d0.T @ s0)
    d = np.sign(np.linalg.det(u @ vt))
    D = np.diag([1.0, 1.0, d])
    r = u @ D @ vt
    scale = (sig * np.diag(D)).sum() / (s0 ** 2).sum()
    return scale * s0 @ r.T + md


def gpa(shapes: list[np.ndarray], iters: int = 10) -> np.ndarray:
    """Generalised Procrustes mean of shapes [N,3] (unit RMS size)."""
    ref = shapes[0] - shapes[0].mean(0)
    ref /= np.sqrt((ref ** 2).sum(1).mean())
    for _ in range(iters):
        mean = np.mean([procrustes(s, ref) for s in shapes], 0)
        mean -= mean.mean(0)
        mean /= np.sqrt((mean ** 2).sum(1).mean())
        ref = mean
    return ref


def symmetrise(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror-average p [N,3] (already x-centred on the face midline); returns (p_sym, mirror index)."""
    from scipy.optimize import linear_sum_assignment

    mir = p * np.array([-1.0, 1.0, 1.0])
    cost = ((p[:, None, :] - mir[None, :, :]) ** 2).sum(-1)
    _, col = linear_sum_assignment(cost)
    sym = 0.5 * (p + p[col] * np.array([-1.0, 1.0, 1.0]))
    return sym, col


def to_head_frame(p: np.ndarray) -> np.ndarray:
    x = p[LEFT_IRIS] - p[RIGHT_IRIS]
    x /= np.linalg.norm(x)
    y = p[CHIN] - p[FOREHEAD]
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    r = np.stack([x, y, z])                       # rows: head axes in the source frame
    q = (p - p[NOSE_TIP]) @ r.T
    return q


def triangles(lm: np.ndarray) -> np.ndarray:
    """Mediapipe tessellation triangles [T,3], wound so normals point to -z (toward a frontal camera)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    adj: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = set()
    for a in adj:
        for b, c in itertools.combinations(sorted(adj[a]), 2):
            if c in adj[b]:
                tris.add(tuple(sorted((a, b, c))))
    t = np.array(sorted(tris), np.int64)
    # drop "triangles" that are 3-cliques but not faces: keep those whose area is small vs edge graph
    # (mediapipe's tessellation has no spurious cliques in practice; guard anyway with a size check)
    v0, v1, v2 = lm[t[:, 0]], lm[t[:, 1]], lm[t[:, 2]]
    n = np.cross(v1 - v0, v2 - v0)
    flip = n[:, 2] > 0
    t[flip] = t[flip][:, [0, 2, 1]]
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    ap.add_argument("--out", type=Path, default=REPO / "avatar" / "data")
    args = ap.parse_args()

    per_id = detect(args.media)
    if not per_id:
        raise SystemExit(f"no faces found under {args.media}")
    means = []
    for name, shapes in per_id.items():
        print(f"{name}: {len(shapes)} detections")
        means.append(gpa(shapes))
    mean = gpa(means)
    mean = to_head_frame(mean)
    mean[:, 0] -= mean[[RIGHT_IRIS, LEFT_IRIS], 0].mean()
    sym, mirror = symmetrise(mean)
    sym = to_head_frame(sym)
    sym *= IPD_M / np.linalg.norm(sym[LEFT_IRIS] - sym[RIGHT_IRIS])
    sym[:, 0] -= sym[NOSE_TIP, 0]
    sym[:, 2] += NOSE_TIP_Z_M
    lm = sym.astype(np.float32)
    tris = triangles(lm).astype(np.int16)
    asym = np.abs(mean * (IPD_M / np.linalg.norm(mean[LEFT_IRIS] - mean[RIGHT_IRIS]))
                  - (sym - sym[NOSE_TIP])).max()
    print(f"identities: {len(means)}, max symmetrisation change {asym * 1000:.1f} mm, "
          f"self-mirrored points {(mirror == np.arange(len(mirror))).sum()}, triangles {len(tris)}")
    print("extent (m):", lm.min(0), lm.max(0))
    for path, arr in ((args.out / "canonical_face.npy", lm), (args.out / "canonical_face_tris.npy", tris)):
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
        print("wrote", path)


if __name__ == "__main__":
    main()
