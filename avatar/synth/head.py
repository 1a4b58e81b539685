"""A procedural Gaussian head built on the canonical face, with a jaw that opens and eyelids that close.

    g = procedural_head(mouth_open=0.4, blink=0.0, style=HeadStyle())
    g["means"] [N,3] head frame (metres)   g["quats"] [N,4] wxyz   g["scales"] [N,3] linear
    g["opacities"] [N] in [0,1]            g["colors"] [N,3] RGB in [0,1]
    g["labels"] [N] int64 mask labels (avatar.data.schema.LABELS: 1 head/hair, 2 face, 3 mouth, 4 torso)
    lm = deformed_landmarks(mouth_open=0.4, blink=0.0, style=HeadStyle())   # np.float32 [478,3]

Parts (all in the head frame of avatar.data.face_model; the face is at negative z):
  * face skin: flat Gaussians on the sub-divided mediapipe tessellation (face_model.TRIANGLES), each
    tied to its triangle by barycentric coordinates, so it follows the deformed landmarks exactly;
    lips and brows are coloured by the triangles they lie in; baked Lambert shading.
  * eyes: a fixed eye surface (sclera, iris, pupil at the iris landmarks) just behind each eye
    opening; blinking moves the upper (and a little the lower) lid contour landmarks together, so
    the lid skin triangles stretch over the eye.
  * mouth: the lower face rotates about a jaw pivot near the ears. mouth_open = 0 closes the lips
    (the canonical face, a mediapipe average, is slightly open), 1 opens them by about
    2 cm * style.mouth_amplitude at the centre. Behind the lips: a dark cavity, a tongue and upper
    and lower teeth (label 3), the lower ones moving with the jaw.
  * skull with hair, ears, neck, the skin under the jaw and the shoulders.

Everything is deterministic (no random state); pure numpy/torch (avatar.data never imports
avatar.ops). Geometry for a style is built once and cached; one call per frame costs ~ms.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Tuple

import numpy as np

from avatar.data import face_model as fm
from avatar.data.cameras import rotmat_to_quat
from avatar.data.schema import LABELS


Color = Tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class HeadStyle:
    """Identity of a procedural head: colours, proportions and how its mouth moves."""

    skin: Color = (0.86, 0.66, 0.55)
    """Skin RGB in [0,1] (face, ears, neck)."""
    hair: Color = (0.20, 0.13, 0.09)
    """Hair and eyebrow RGB."""
    lips: Color = (0.70, 0.34, 0.34)
    """Lip RGB."""
    iris: Color = (0.30, 0.20, 0.12)
    """Iris RGB."""
    shirt: Color = (0.18, 0.28, 0.50)
    """Shoulders / shirt RGB."""
    head_scale: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Scale of the head (face, skull, neck) along x, y, z about the head centre."""
    mouth_amplitude: float = 1.0
    """Jaw opening at mouth_open = 1, relative to the default (0.24 rad, ~2 cm between the lips)."""
    mouth_asymmetry: float = 0.0
    """In [-0.6, 0.6]: > 0 opens the subject's left side (+x) more than the right."""
    spacing: float = 0.003
    """Target distance between neighbouring surface Gaussians (metres); smaller = more Gaussians."""


JAW_RANGE = 0.24          # rad of jaw rotation at mouth_open = 1 (amplitude 1)
MOUTH_BAND = 0.012        # m: height of the transition between the fixed upper face and the jaw
EYE_OPEN = 1.35          # resting lid gap relative to the canonical face's
BLINK_MEET = 0.2          # the lids meet 20% of the way from the lower to the upper lid contour
LIGHT = np.array([-0.35, -0.55, -1.0]) / np.linalg.norm([-0.35, -0.55, -1.0])  # toward the light
_UPPER_LIP_OUTER = np.array([185, 40, 39, 37, 0, 267, 269, 270, 409], np.int64)
_MOUTH_CORNERS = np.array([61, 291, 78, 308], np.int64)


# ----------------------------------------------------------------------------------------- helpers
def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _inside(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon: pts [M,2], poly [K,2] -> bool [M]."""
    x, y = pts[:, :1], pts[:, 1:2]
    x0, y0 = poly[None, :, 0], poly[None, :, 1]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = (y0 > y) != (y1 > y)
    xi = x0 + (y - y0) * (x1 - x0) / np.where(y1 == y0, 1e-12, y1 - y0)
    return (crosses & (x < xi)).sum(1) % 2 == 1


def _frame_from_normals(n: np.ndarray) -> np.ndarray:
    """Unit normals [M,3] -> wxyz quaternions [M,4] of rotations whose local z axis is the normal."""
    n = n / np.linalg.norm(n, axis=1, keepdims=True)
    ref = np.where(np.abs(n[:, 1:2]) < 0.9, np.array([[0.0, 1.0, 0.0]]), np.array([[1.0, 0.0, 0.0]]))
    t1 = np.cross(ref, n)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(n, t1)
    R = np.stack([t1, t2, n], axis=2)                                  # columns = local axes
    return rotmat_to_quat(R)


def _subdivision(level: int) -> np.ndarray:
    """Barycentric centroids [level^2, 3] of a triangle split into level^2 congruent sub-triangles."""
    out = []
    for i in range(level):
        for j in range(level - i):
            out.append(((i + 1 / 3) / level, (j + 1 / 3) / level))
            if i + j <= level - 2:
                out.append(((i + 2 / 3) / level, (j + 2 / 3) / level))
    a = np.array(out)
    return np.concatenate([a, 1.0 - a.sum(1, keepdims=True)], 1)


def _texture(p: np.ndarray, amount: float) -> np.ndarray:
    """Deterministic smooth-ish multiplicative texture [M,1] from positions (a few sines)."""
    f = np.sin(p @ np.array([531.0, 277.0, 193.0])) + np.sin(p @ np.array([-211.0, 613.0, 97.0]))
    f += 0.5 * np.sin(p @ np.array([1301.0, -977.0, 411.0]))
    return 1.0 + amount * (f / 2.5)[:, None]


def _shade(colors: np.ndarray, normals: np.ndarray, ambient: float = 0.55) -> np.ndarray:
    n = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    lam = np.clip(n @ LIGHT, 0.0, 1.0)[:, None]
    return colors * (ambient + (1.0 - ambient) * lam)


def _ellipsoid_points(center, radii, spacing: float) -> Tuple[np.ndarray, np.ndarray, float]:
    """Near-uniform points on an ellipsoid (Fibonacci sphere mapped) -> (points, outward normals, s)."""
    center, radii = np.asarray(center, float), np.asarray(radii, float)
    p_ = 1.6075
    area = 4 * np.pi * (((radii[0] * radii[1]) ** p_ + (radii[0] * radii[2]) ** p_
                         + (radii[1] * radii[2]) ** p_) / 3) ** (1 / p_)
    n = max(16, int(area / spacing ** 2))
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5 ** 0.5) * i
    u = np.stack([np.cos(theta) * np.sin(phi), np.cos(phi), np.sin(theta) * np.sin(phi)], 1)
    pts = center + u * radii
    normals = u / radii
    return pts, normals / np.linalg.norm(normals, axis=1, keepdims=True), float(np.sqrt(area / n))


# ------------------------------------------------------------------------------------ the model
class _Head:
    """Pre-computed geometry of one style; .landmarks() and .gaussians() evaluate a frame."""

    def __init__(self, style: HeadStyle):
        self.style = style
        sc = np.asarray(style.head_scale, float)
        lm = fm.canonical().astype(np.float64) * sc                       # [478,3]
        # the mediapipe average squints a little (7 mm lid gap): open the resting eyes wider
        for up, lo in ((fm.LEFT_EYE_UPPER, fm.LEFT_EYE_LOWER), (fm.RIGHT_EYE_UPPER, fm.RIGHT_EYE_LOWER)):
            lm[up] = lm[lo] + EYE_OPEN * (lm[up] - lm[lo])
        self.lm0 = lm
        self.pivot = np.array([0.0, 0.0, 0.005]) * sc                     # jaw hinge (y, z used)
        x = lm[:, 0]
        y_mouth = 0.5 * (lm[[13, 14], 1].mean() + lm[[61, 291], 1].mean())
        w = _smoothstep((lm[:, 1] - y_mouth) / (MOUTH_BAND * sc[1]) + 0.5)
        w[_UPPER_LIP_OUTER] = 0.0
        w[fm.UPPER_LIP_INNER] = 0.0
        w[fm.LOWER_LIP_INNER] = 1.0
        w[fm.LOWER_LIP_OUTER] = 1.0
        w[_MOUTH_CORNERS] = 0.5
        w[468:] = 0.0
        self.y_mouth, self.jaw_w = y_mouth, w                              # [478]
        self.asym = np.clip(x / (0.03 * sc[0]), -1.0, 1.0)
        # angle that brings the lower inner lip up onto the upper one (closed mouth at 0)
        gap = (lm[fm.LOWER_LIP_INNER, 1] - lm[fm.UPPER_LIP_INNER, 1]).max()
        rz = lm[14, 2] - self.pivot[2]
        self.theta_closed = -gap / abs(rz)
        self._build_face()
        self._build_extras()

    # --- deformation -------------------------------------------------------------------------
    def _angles(self, mouth_open: float, w: np.ndarray, asym: np.ndarray) -> np.ndarray:
        s = self.style
        open_ = mouth_open * JAW_RANGE * s.mouth_amplitude * np.clip(1.0 + s.mouth_asymmetry * asym, 0, 2)
        return w * (self.theta_closed + open_)

    def _rotate_jaw(self, p: np.ndarray, angle: np.ndarray) -> np.ndarray:
        c, s_ = np.cos(angle), np.sin(angle)
        y, z = p[:, 1] - self.pivot[1], p[:, 2] - self.pivot[2]
        out = p.copy()
        out[:, 1] = c * y - s_ * z + self.pivot[1]
        out[:, 2] = s_ * y + c * z + self.pivot[2]
        return out

    def landmarks(self, mouth_open: float, blink: float) -> np.ndarray:
        lm = self._rotate_jaw(self.lm0, self._angles(mouth_open, self.jaw_w, self.asym))
        b = float(np.clip(blink, 0.0, 1.0))
        for up, lo in ((fm.LEFT_EYE_UPPER, fm.LEFT_EYE_LOWER), (fm.RIGHT_EYE_UPPER, fm.RIGHT_EYE_LOWER)):
            u, l_ = lm[up].copy(), lm[lo].copy()
            meet = l_ + BLINK_MEET * (u - l_)
            meet[:, 2] = np.minimum(u[:, 2], l_[:, 2]) - 0.0005   # the closed lid bulges over the eye
            lm[up] = u + b * (meet - u)
            lm[lo] = l_ + b * (meet - l_)
        return lm

    # --- face skin on the tessellation -------------------------------------------------------
    def _build_face(self):
        s = self.style
        lm, tris = self.lm0, fm.triangles()
        e = np.linalg.norm(lm[tris[:, [1, 2, 0]]] - lm[tris], axis=2).max(1)
        # finer around the eyes and lips, whose openings must stay sharp
        fine = set(fm.LEFT_EYE.tolist()) | set(fm.RIGHT_EYE.tolist()) | set(fm.LIPS_INNER.tolist())
        local = np.where([any(v in fine for v in t) for t in tris], 0.35, 1.0) * s.spacing
        levels = np.maximum(1, np.round(e / (local * 1.6))).astype(int)
        tri_idx, bary = [], []
        for L in np.unique(levels):
            sel = np.nonzero(levels == L)[0]
            b = _subdivision(int(L))
            tri_idx.append(np.repeat(sel, len(b)))
            bary.append(np.tile(b, (len(sel), 1)))
        self.f_tri = np.concatenate(tri_idx)                               # [Mf]
        self.f_bary = np.concatenate(bary)                                 # [Mf,3]
        self.f_count = np.bincount(self.f_tri, minlength=len(tris))        # samples per triangle
        p = np.einsum("mk,mkd->md", self.f_bary, lm[tris[self.f_tri]])
        # colours by region: lips, brows, skin
        skin, lips, hair = (np.array(c, float) for c in (s.skin, s.lips, s.hair))
        lip_poly = lm[fm.LIPS_OUTER, :2]
        lip_set = set(np.nonzero(_inside(lm[:, :2], lip_poly * 1.02 + lip_poly.mean(0) * -0.02))[0])
        lip_set |= set(fm.LIPS_OUTER.tolist()) | set(fm.LIPS_INNER.tolist())
        brow_set = set(fm.LEFT_BROW.tolist()) | set(fm.RIGHT_BROW.tolist())
        t_lip = np.array([all(v in lip_set for v in t) for t in tris])
        t_brow = np.array([all(v in brow_set for v in t) for t in tris])
        col = np.tile(skin, (len(p), 1))
        col[t_lip[self.f_tri]] = lips
        brow = t_brow[self.f_tri]
        col[brow] = 0.35 * skin + 0.65 * hair
        # a little blush on the cheeks, shadowing toward the face border
        cheek = np.exp(-(((np.abs(p[:, 0]) - 0.04) / 0.015) ** 2 + ((p[:, 1] - 0.005) / 0.015) ** 2))
        col = col * (1 - 0.12 * cheek[:, None]) + 0.12 * cheek[:, None] * np.array([0.85, 0.45, 0.45])
        self.f_color = np.clip(col * _texture(p, 0.05), 0, 1)
        self.f_label = np.full(len(p), LABELS["face"])

    # --- everything that is not face skin ----------------------------------------------------
    def _build_extras(self):
        s = self.style
        sc = np.asarray(s.head_scale, float)
        lm = self.lm0
        sp = s.spacing
        parts = []   # (points [M,3], normals [M,3], scale, colors, label, jaw weight, opacity, lit)

        # eyes: fixed surface behind each opening; sclera, iris, pupil
        for contour, iris in ((fm.LEFT_EYE, 473), (fm.RIGHT_EYE, 468)):
            poly = lm[contour]
            cen = poly[:, :2].mean(0)
            big = (poly[:, :2] - cen) * 1.25 + cen
            step = sp * 0.3
            lo, hi = big.min(0), big.max(0)
            gx, gy = np.meshgrid(np.arange(lo[0], hi[0], step), np.arange(lo[1], hi[1], step))
            xy = np.stack([gx.ravel(), gy.ravel()], 1)
            xy = xy[_inside(xy, big)]
            # depth: nearest contour point's z pushed back, curving back toward the corners
            d = np.linalg.norm(xy[:, None] - poly[None, :, :2], axis=2)
            z = poly[d.argmin(1), 2] + 0.0025 * sc[2]
            r = np.linalg.norm(xy - lm[iris, :2], axis=1)
            col = np.tile([0.93, 0.91, 0.88], (len(xy), 1))
            iris_r = 0.0058 * sc[0]
            ring = r < iris_r
            col[ring] = np.array(s.iris) * (0.75 + 0.5 * (r[ring] / iris_r))[:, None]
            col[r < 0.0024 * sc[0]] = 0.04
            col[~ring] *= (1.0 - 0.25 * np.clip((r[~ring] - iris_r) / 0.012, 0, 1))[:, None]
            pts = np.concatenate([xy, z[:, None]], 1)
            parts.append((pts, np.tile([0, 0, -1.0], (len(pts), 1)), step * 0.9, col, LABELS["face"], 0.0,
                          1.0, False))

        # mouth: cavity (dark), tongue, teeth; lower parts follow the jaw
        xs = 0.027 * sc[0]
        y_top, y_bot = lm[fm.UPPER_LIP_INNER, 1].min() - 0.006 * sc[1], lm[152, 1] - 0.02 * sc[1]
        step = sp
        gx, gy = np.meshgrid(np.arange(-xs, xs + 1e-9, step), np.arange(y_top, y_bot, step))
        gx, gy = gx.ravel(), gy.ravel()
        layers = []
        for k, dz in enumerate((0.0, 0.01)):
            z = -0.071 * sc[2] + 14.0 * gx ** 2 / sc[0] + dz * sc[2]
            c = np.tile(np.array([0.30, 0.08, 0.09]) * (1.0 - 0.3 * k), (len(gx), 1))
            layers.append((np.stack([gx, gy, z], 1), c))
        pts = np.concatenate([p for p, _ in layers])
        col = np.concatenate([c for _, c in layers])
        w = _smoothstep((pts[:, 1] - self.y_mouth) / (MOUTH_BAND * sc[1]) + 0.5)
        parts.append((pts, np.tile([0, 0, -1.0], (len(pts), 1)), step * 0.8, col, LABELS["mouth"], w, 1.0, False))
        # tongue (moves with the jaw)
        y14 = lm[14, 1]
        gx, gz = np.meshgrid(np.arange(-0.019 * sc[0], 0.019 * sc[0], step),
                             np.arange(-0.072 * sc[2], -0.05 * sc[2], step))
        gx, gz = gx.ravel(), gz.ravel()
        keep = (gx / (0.019 * sc[0])) ** 2 + ((gz + 0.05 * sc[2]) / (0.022 * sc[2])) ** 2 < 1
        gx, gz = gx[keep], gz[keep]
        ty = y14 + 0.004 * sc[1] + 10.0 * gx ** 2 + 0.1 * (gz - gz.min())
        pts = np.stack([gx, ty, gz], 1)
        parts.append((pts, np.tile([0, -1.0, -0.3], (len(pts), 1)), step * 0.8,
                      np.tile([0.62, 0.27, 0.29], (len(pts), 1)), LABELS["mouth"], 1.0, 1.0, True))
        # teeth: upper row fixed below the upper inner lip, lower row on the jaw above the lower lip
        y13 = lm[13, 1]
        tstep = sp * 0.45
        for y0, y1, wj in ((y13 - 0.003, y13 + 0.0045, 0.0), (y14 - 0.0045, y14 + 0.0025, 1.0)):
            gx, gy = np.meshgrid(np.arange(-0.02 * sc[0], 0.02 * sc[0], tstep),
                                 np.arange(y0 * 1.0, y1, tstep))
            gx, gy = gx.ravel(), gy.ravel()
            z = lm[13, 2] + 0.0045 * sc[2] + 12.0 * gx ** 2 / sc[0]
            pts = np.stack([gx, gy, np.broadcast_to(z, gx.shape)], 1)
            # gaps between teeth: darker every ~4.5 mm
            gap = np.abs(((gx / 0.0045 + 0.5) % 1.0) - 0.5) < 0.07
            col = np.tile([0.94, 0.93, 0.86], (len(pts), 1))
            col[gap] = [0.55, 0.5, 0.45]
            parts.append((pts, np.tile([0, 0, -1.0], (len(pts), 1)), tstep * 0.9, col, LABELS["mouth"], wj,
                          1.0, False))

        # skull + hair: an ellipsoid, without the part in front of the face
        c_sk, r_sk = np.array([0.0, -0.025, 0.012]) * sc, np.array([0.077, 0.108, 0.10]) * sc
        pts, nrm, ssk = _ellipsoid_points(c_sk, r_sk, sp * 1.8)
        oval = lm[fm.FACE_OVAL, :2]
        oval_big = (oval - oval.mean(0)) * 0.97 + oval.mean(0)
        in_oval = _inside(pts[:, :2], oval_big)
        # keep skull points inside the face outline only well behind the face surface (they fill the
        # head when seen from the side); depth of the face there = z of the nearest landmark in xy
        near = np.linalg.norm(pts[:, None, :2] - lm[None, :468, :2], axis=2).argmin(1)
        drop = (in_oval & (pts[:, 2] < lm[near, 2] + 0.012 * sc[2])) | (pts[:, 1] > 0.06 * sc[1])
        pts, nrm, in_oval = pts[~drop], nrm[~drop], in_oval[~drop]
        y, z, ax = pts[:, 1] / sc[1], pts[:, 2] / sc[2], np.abs(pts[:, 0]) / sc[0]
        is_hair = (y < -0.083) | ((z > 0.025) & (y < 0.045)) | ((y < -0.035) & (ax > 0.055)) \
            | ((y < 0.0) & (z > -0.005) & (ax > 0.06))
        is_hair &= ~in_oval
        col = np.where(is_hair[:, None], np.array(s.hair), np.array(s.skin) * 0.95)
        col = col * _texture(pts * np.where(is_hair[:, None], 3.0, 1.0), np.where(is_hair, 0.25, 0.04)[:, None])
        # hair sits slightly outside the skull
        pts = pts + nrm * np.where(is_hair, 0.006, 0.0)[:, None] * sc
        parts.append((pts, nrm, ssk * 0.85, col, LABELS["head"], 0.0, 1.0, True))
        # ears
        for sgn in (-1.0, 1.0):
            pts, nrm, se = _ellipsoid_points(np.array([sgn * 0.077, 0.0, 0.015]) * sc,
                                             np.array([0.012, 0.03, 0.018]) * sc, sp * 0.8)
            parts.append((pts, nrm, se * 0.85, np.tile(np.array(s.skin) * 0.92, (len(pts), 1)), LABELS["head"],
                          0.0, 1.0, True))

        # neck: an elliptic cylinder; under-jaw skin from the lower face oval to the neck
        ncen, nr = np.array([0.0, 0.0, 0.022]) * sc, np.array([0.056, 0.0, 0.052]) * sc
        ys = np.arange(0.04 * sc[1], 0.21, sp * 2.0)
        n_around = int(2 * np.pi * nr[0] / (sp * 2.0))
        ang = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
        A, Y = np.meshgrid(ang, ys)
        A, Y = A.ravel(), Y.ravel()
        pts = np.stack([ncen[0] + nr[0] * np.sin(A), Y, ncen[2] - nr[2] * np.cos(A)], 1)
        nrm = np.stack([np.sin(A) / nr[0], np.zeros_like(A), -np.cos(A) / nr[2]], 1)
        neck_col = np.array(s.skin) * 0.88
        parts.append((pts, nrm, sp * 1.7, np.tile(neck_col, (len(pts), 1)), LABELS["torso"], 0.0, 1.0, True))
        self.neck = (ncen, nr)
        # under the jaw: for lower-oval landmarks, strips to the neck (weights from the landmark)
        oval_ids = fm.FACE_OVAL
        low = oval_ids[lm[oval_ids, 1] > 0.0 * sc[1]]
        self.under_ids = low
        self.under_t = np.arange(0.0, 1.0, 0.12)
        self.under_col = neck_col * 0.95

        # shoulders / torso: upper half of a wide ellipsoid
        pts, nrm, sto = _ellipsoid_points([0.0, 0.31, 0.03], [0.24, 0.13, 0.12], sp * 3.0)
        keep = pts[:, 1] < 0.30
        pts, nrm = pts[keep], nrm[keep]
        col = np.array(s.shirt) * _texture(pts, 0.06)
        parts.append((pts, nrm, sto * 0.9, col, LABELS["torso"], 0.0, 1.0, True))

        P = np.concatenate([p[0] for p in parts])
        N = np.concatenate([p[1] for p in parts])
        self.x_pts, self.x_nrm = P, N / np.linalg.norm(N, axis=1, keepdims=True)
        self.x_scale = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
        cols = []
        for pts, nrm, _, col, _, _, _, lit in parts:
            col = np.broadcast_to(col, pts.shape).astype(float)
            cols.append(np.clip(_shade(col, nrm) if lit else col, 0, 1))
        self.x_color = np.concatenate(cols)
        self.x_label = np.concatenate([np.full(len(p[0]), p[4]) for p in parts])
        self.x_w = np.concatenate([np.broadcast_to(np.asarray(p[5], float), (len(p[0]),)) for p in parts])
        self.x_opacity = np.concatenate([np.full(len(p[0]), p[6]) for p in parts])
        self.x_asym = np.clip(P[:, 0] / (0.03 * sc[0]), -1, 1)
        self.x_quat = _frame_from_normals(self.x_nrm)

    # --- a frame ------------------------------------------------------------------------------
    def gaussians(self, mouth_open: float, blink: float) -> Dict[str, np.ndarray]:
        sp = self.style.spacing
        lm = self.landmarks(mouth_open, blink)
        tris = fm.triangles()
        # face skin: barycentric on the deformed triangles; disc size from the deformed area
        v = lm[tris]                                                       # [T,3,3]
        n_t = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        area = 0.5 * np.linalg.norm(n_t, axis=1)
        f_means = np.einsum("mk,mkd->md", self.f_bary, v[self.f_tri])
        # smooth shading: area-weighted vertex normals, interpolated barycentrically
        vn = np.zeros_like(lm)
        for k in range(3):
            np.add.at(vn, tris[:, k], n_t)
        vn /= np.linalg.norm(vn, axis=1, keepdims=True) + 1e-12
        f_n = np.einsum("mk,mkd->md", self.f_bary, vn[tris[self.f_tri]])
        disc = np.sqrt(area / np.maximum(self.f_count, 1))[self.f_tri] * 0.6 + 0.0002
        f_scales = np.stack([disc, disc, np.full_like(disc, 0.00035)], 1)
        f_colors = np.clip(_shade(self.f_color, f_n), 0, 1)
        f_quats = _frame_from_normals(f_n)
        # under-jaw strips between deformed lower-oval landmarks and the neck
        ncen, nr = self.neck
        top = lm[self.under_ids]                                           # [K,3]
        ang = np.arctan2(top[:, 0] - ncen[0], -(top[:, 2] - ncen[2]) + 1e-9)
        ring = np.stack([ncen[0] + nr[0] * np.sin(ang), top[:, 1] + 0.035,
                         ncen[2] - nr[2] * np.cos(ang)], 1)
        t = self.under_t[:, None, None]
        strip = top[None] * (1 - t) + ring[None] * t                       # [S,K,3]
        mid = 0.5 * (strip[:, 1:] + strip[:, :-1])
        u_pts = np.concatenate([strip.reshape(-1, 3), mid.reshape(-1, 3)])
        seg = np.linalg.norm(top[1:] - top[:-1], axis=1).max()
        u_scale = max(seg * 0.6, sp)
        u_n = u_pts - np.array([0.0, -0.02, 0.0])
        u_n[:, 1] = np.abs(u_n[:, 1]) + 0.05                                # facing down/out
        # extras (jaw-attached ones follow the same rotation as the landmarks)
        x_means = self._rotate_jaw(self.x_pts, self._angles(mouth_open, self.x_w, self.x_asym))
        means = np.concatenate([f_means, x_means, u_pts])
        n_u = len(u_pts)
        out = {
            "means": means,                                                        # [N,3]
            "quats": np.concatenate([f_quats, self.x_quat, _frame_from_normals(u_n)]),   # [N,4]
            "scales": np.concatenate([f_scales,
                                      np.stack([self.x_scale, self.x_scale, self.x_scale * 0.2], 1),
                                      np.tile([u_scale, u_scale, u_scale * 0.2], (n_u, 1))]),
            "opacities": np.concatenate([np.full(len(f_means), 0.98), self.x_opacity,
                                         np.full(n_u, 0.98)]),                     # [N]
            "colors": np.concatenate([f_colors, self.x_color,
                                      np.clip(_shade(np.tile(self.under_col, (n_u, 1)), u_n), 0, 1)]),
            "labels": np.concatenate([self.f_label, self.x_label, np.full(n_u, LABELS["torso"])]),
        }
        return out


@functools.lru_cache(maxsize=16)
def _head(style: HeadStyle) -> _Head:
    return _Head(style)


def _check(mouth_open: float, blink: float, style) -> None:
    if not isinstance(style, HeadStyle):
        raise ValueError(f"style must be a HeadStyle, got {type(style).__name__}")
    for name, v in (("mouth_open", mouth_open), ("blink", blink)):
        if not np.isfinite(v) or v < -1e-6 or v > 1 + 1e-6:
            raise ValueError(f"{name} must be in [0, 1], got {v!r}")
    if not (0.0005 <= style.spacing <= 0.02):
        raise ValueError(f"HeadStyle.spacing must be in [0.0005, 0.02] m, got {style.spacing!r}")
    if abs(style.mouth_asymmetry) > 0.6:
        raise ValueError(f"HeadStyle.mouth_asymmetry must be in [-0.6, 0.6], got {style.mouth_asymmetry!r}")


def deformed_landmarks(mouth_open: float, blink: float, style: HeadStyle = HeadStyle()) -> np.ndarray:
    """The 478 landmarks of the procedural head (head frame, metres) -> np.float32 [478,3]."""
    _check(mouth_open, blink, style)
    return _head(style).landmarks(float(mouth_open), float(blink)).astype(np.float32)


def procedural_head(mouth_open: float, blink: float, style: HeadStyle = HeadStyle(),
                    device=None) -> Dict[str, "object"]:
    """Gaussians of the procedural head at one (mouth_open, blink) -> dict of torch tensors.

    means [N,3], quats [N,4] wxyz, scales [N,3] (linear), opacities [N], colors [N,3] float32 on
    `device` (CPU by default) and labels [N] int64. N depends only on the style.
    """
    import torch

    _check(mouth_open, blink, style)
    g = _head(style).gaussians(float(mouth_open), float(blink))
    out = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32, device=device)
           for k, v in g.items() if k != "labels"}
    out["labels"] = torch.as_tensor(g["labels"], dtype=torch.int64, device=device)
    return out
