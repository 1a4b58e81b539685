// Per-Gaussian projection (forward and hand-written backward), shared by the CPU and CUDA builds.
//
// Math (EWA splatting, Zwicker et al. 2002; 3DGS, Kerbl et al. 2023), with gsplat's conventions:
//   p = R mu + t (camera space, OpenCV axes), Sigma = (Rq S)(Rq S)^T, Sigma_c = R Sigma R^T,
//   J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]], (tx, ty) = z * clamp((x, y)/z, fov limits),
//   Sigma_2d = J Sigma_c J^T + eps2d I, conic = Sigma_2d^-1, mean2d = (fx x/z + cx, fy y/z + cy),
//   "antialiased": opacity *= sqrt(det(Sigma_2d - eps2d I)/det(Sigma_2d));
//   per-axis extent r = ceil(sqrt(2 log(255 opacity) diag(Sigma_2d))) (where alpha can reach 1/255).
// The PyTorch reference avatar/ops/_torch_impl.py implements the same operations in the same order.
#pragma once

#include "avatar/common.h"

namespace avatar {

struct Camera {
    float R[9];     // world-to-camera rotation (row-major)
    float t[3];
    float fx, fy, cx, cy;
    int width, height;
};

struct ProjectSettings {
    float near_plane, far_plane, eps2d;
    bool antialiased;
};

struct Projected {
    float mean2d[2];
    float conic[3];     // (A, B, C): sigma = 0.5 (A dx^2 + C dy^2) + B dx dy
    float depth;        // camera z
    float opacity;      // times the antialiasing compensation; 0 when culled
    int32_t radius[2];  // per-axis pixel extent (x, y); 0 = culled
};

// Viewmat [4,4] row-major and K [3,3] row-major -> Camera.
AVATAR_HD Camera make_camera(const float* viewmat, const float* K, int width, int height) {
    Camera c;
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) c.R[3 * i + j] = viewmat[4 * i + j];
        c.t[i] = viewmat[4 * i + 3];
    }
    c.fx = K[0]; c.fy = K[4]; c.cx = K[2]; c.cy = K[5];
    c.width = width; c.height = height;
    return c;
}

// Unit quaternion (wxyz; zero -> identity) and its rotation matrix. Returns the norm used.
AVATAR_HD float quat_to_rotmat(const float* q_in, float* qn, float* Rq) {
    float ss = q_in[0] * q_in[0] + q_in[1] * q_in[1] + q_in[2] * q_in[2] + q_in[3] * q_in[3];
    float n = sqrtf(fmaxf(ss, 1e-24f));
    for (int i = 0; i < 4; ++i) qn[i] = q_in[i] / n;
    float w = qn[0], x = qn[1], y = qn[2], z = qn[3];
    Rq[0] = 1.f - 2.f * (y * y + z * z); Rq[1] = 2.f * (x * y - w * z); Rq[2] = 2.f * (x * z + w * y);
    Rq[3] = 2.f * (x * y + w * z); Rq[4] = 1.f - 2.f * (x * x + z * z); Rq[5] = 2.f * (y * z - w * x);
    Rq[6] = 2.f * (x * z - w * y); Rq[7] = 2.f * (y * z + w * x); Rq[8] = 1.f - 2.f * (x * x + y * y);
    return n;
}

// Intermediates shared by forward and backward.
struct ProjectCache {
    float p[3];          // camera-space mean
    float zs;            // z, or 1 when outside [near, far]
    bool in_depth;
    float Rq[9], qn[4], qnorm, M[9];   // M = Rq diag(s)
    float cov_c[9];      // camera-space covariance
    float J[6];          // 2x3 row-major
    bool clamp_x, clamp_y;
    float a0, b0, c0;    // J Sigma_c J^T before the low-pass
    float det_orig, det;
    float comp;          // antialiasing opacity compensation (1 in classic mode)
    bool ok;             // kept (radius > 0)
};

AVATAR_HD void project_compute(const float* mean, const float* quat, const float* scale, float opacity,
                               const Camera& cam, const ProjectSettings& st, ProjectCache& k,
                               Projected& out) {
    for (int i = 0; i < 3; ++i)
        k.p[i] = cam.R[3 * i] * mean[0] + cam.R[3 * i + 1] * mean[1] + cam.R[3 * i + 2] * mean[2] + cam.t[i];
    float x = k.p[0], y = k.p[1], z = k.p[2];
    k.in_depth = (z >= st.near_plane) && (z <= st.far_plane);
    float zs = k.in_depth ? z : 1.f;
    k.zs = zs;
    k.qnorm = quat_to_rotmat(quat, k.qn, k.Rq);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) k.M[3 * i + j] = k.Rq[3 * i + j] * scale[j];
    float Sigma[9], tmp[9];
    mat3_mul_bt(k.M, k.M, Sigma);
    mat3_mul(cam.R, Sigma, tmp);
    mat3_mul_bt(tmp, cam.R, k.cov_c);

    float tan_fovx = 0.5f * cam.width / cam.fx, tan_fovy = 0.5f * cam.height / cam.fy;
    float lim_x_pos = (cam.width - cam.cx) / cam.fx + 0.3f * tan_fovx;
    float lim_x_neg = cam.cx / cam.fx + 0.3f * tan_fovx;
    float lim_y_pos = (cam.height - cam.cy) / cam.fy + 0.3f * tan_fovy;
    float lim_y_neg = cam.cy / cam.fy + 0.3f * tan_fovy;
    float rx = x / zs, ry = y / zs;
    k.clamp_x = rx < -lim_x_neg || rx > lim_x_pos;
    k.clamp_y = ry < -lim_y_neg || ry > lim_y_pos;
    float tx = zs * fminf(fmaxf(rx, -lim_x_neg), lim_x_pos);
    float ty = zs * fminf(fmaxf(ry, -lim_y_neg), lim_y_pos);
    k.J[0] = cam.fx / zs; k.J[1] = 0.f; k.J[2] = -cam.fx * tx / (zs * zs);
    k.J[3] = 0.f; k.J[4] = cam.fy / zs; k.J[5] = -cam.fy * ty / (zs * zs);
    // cov2d = J cov_c J^T (2x2)
    float JC[6];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            JC[3 * i + j] = k.J[3 * i] * k.cov_c[j] + k.J[3 * i + 1] * k.cov_c[3 + j] + k.J[3 * i + 2] * k.cov_c[6 + j];
    k.a0 = JC[0] * k.J[0] + JC[1] * k.J[1] + JC[2] * k.J[2];
    k.b0 = JC[0] * k.J[3] + JC[1] * k.J[4] + JC[2] * k.J[5];
    k.c0 = JC[3] * k.J[3] + JC[4] * k.J[4] + JC[5] * k.J[5];
    k.det_orig = k.a0 * k.c0 - k.b0 * k.b0;
    float a = k.a0 + st.eps2d, c = k.c0 + st.eps2d, b = k.b0;
    k.det = a * c - b * b;
    bool ok = k.in_depth && k.det > 0.f;
    float dets = ok ? k.det : 1.f;

    out.mean2d[0] = cam.fx * x / zs + cam.cx;
    out.mean2d[1] = cam.fy * y / zs + cam.cy;
    out.depth = z;
    // antialiasing compensation (1 in classic mode; 0 when det_orig <= 0)
    float comp = 1.f;
    if (st.antialiased) {
        float ratio = k.det_orig / dets;
        comp = (ok && ratio > 0.f) ? sqrtf(ratio) : 0.f;
    }
    k.comp = comp;
    // Opacity-aware per-axis extent (as gsplat): alpha = o exp(-sigma) >= 1/255 needs
    // sigma = 0.5 d^T Sigma_2d^-1 d <= L = log(255 o), an ellipse whose bounding box has
    // half-widths sqrt(2 L Sigma_2d[0,0]) and sqrt(2 L Sigma_2d[1,1]). Every pixel the splat can
    // touch lies inside, so the tiles it overlaps are exactly the ones that matter; o <= 1/255
    // can never reach the threshold and is culled.
    float L = logf(fmaxf(opacity * comp * 255.f, 1e-30f));
    ok = ok && L > 0.f;
    float Lp = ok ? L : 0.f;
    float ext_x = ceilf(sqrtf(2.f * Lp * a)), ext_y = ceilf(sqrtf(2.f * Lp * c));
    ok = ok && ext_x > 0.f && ext_y > 0.f;
    float mx = out.mean2d[0], my = out.mean2d[1];
    ok = ok && (mx + ext_x > 0.f) && (mx - ext_x < (float)cam.width) && (my + ext_y > 0.f) &&
         (my - ext_y < (float)cam.height);
    k.ok = ok;
    out.radius[0] = ok ? (int32_t)ext_x : 0;
    out.radius[1] = ok ? (int32_t)ext_y : 0;
    out.opacity = ok ? opacity * comp : 0.f;
    if (ok) {
        out.conic[0] = c / dets; out.conic[1] = -b / dets; out.conic[2] = a / dets;
    } else {
        out.conic[0] = out.conic[1] = out.conic[2] = 0.f;
    }
}

AVATAR_HD void project_forward(const float* mean, const float* quat, const float* scale, float opacity,
                               const Camera& cam, const ProjectSettings& st, Projected& out) {
    ProjectCache k;
    project_compute(mean, quat, scale, opacity, cam, st, k, out);
}

// Backward of project_forward. Accumulates (+=) into v_mean[3], v_quat[4], v_scale[3], v_opacity,
// and, when v_R is not null, into v_R[9] / v_t[3] (the world-to-camera rotation and translation).
// v_mean2d[2], v_conic[3], v_depth, v_opac_out are the output gradients.
AVATAR_HD void project_backward(const float* mean, const float* quat, const float* scale, float opacity,
                                const Camera& cam, const ProjectSettings& st, const float* v_mean2d,
                                const float* v_conic, float v_depth, float v_opac_out, float* v_mean,
                                float* v_quat, float* v_scale, float* v_opacity, float* v_R = nullptr,
                                float* v_t = nullptr) {
    ProjectCache k;
    Projected out;
    project_compute(mean, quat, scale, opacity, cam, st, k, out);
    float x = k.p[0], y = k.p[1], zs = k.zs;
    float v_p[3] = {0.f, 0.f, 0.f};
    // mean2d = (fx x / zs + cx, fy y / zs + cy)
    v_p[0] += cam.fx / zs * v_mean2d[0];
    v_p[1] += cam.fy / zs * v_mean2d[1];
    if (k.in_depth) v_p[2] += -(cam.fx * x * v_mean2d[0] + cam.fy * y * v_mean2d[1]) / (zs * zs);
    v_p[2] += v_depth;

    if (k.ok) {
        const float comp = k.comp;
        *v_opacity += v_opac_out * comp;
        // G = dL/dSigma_2d (symmetric 2x2: g00, g01 (= g10), g11)
        float a = k.a0 + st.eps2d, c = k.c0 + st.eps2d, b = k.b0;
        float ia = c / k.det, ib = -b / k.det, ic = a / k.det;    // inverse = [[ia, ib], [ib, ic]]
        float va = v_conic[0], vb = 0.5f * v_conic[1], vc = v_conic[2];
        // G = -inv V inv, V = [[va, vb], [vb, vc]]
        float t00 = ia * va + ib * vb, t01 = ia * vb + ib * vc;
        float t10 = ib * va + ic * vb, t11 = ib * vb + ic * vc;
        float g00 = -(t00 * ia + t01 * ib);
        float g01 = -(t00 * ib + t01 * ic);
        float g11 = -(t10 * ib + t11 * ic);
        if (st.antialiased) {
            float ratio = k.det_orig / k.det;
            if (ratio > 0.f) {
                float v_comp = v_opac_out * opacity;
                float v_do = v_comp * 0.5f / (comp * k.det);
                float v_d = -v_comp * 0.5f * comp / k.det;
                g00 += v_do * k.c0 + v_d * c;
                g11 += v_do * k.a0 + v_d * a;
                g01 += -k.b0 * (v_do + v_d);     // half of d/db of (-2 b0 b0) terms per off-diagonal
            }
        }
        // Sigma_2d = J Sigma_c J^T: dL/dSigma_c = J^T G J, dL/dJ = 2 G J Sigma_c
        float G[4] = {g00, g01, g01, g11};
        float GJ[6];
        for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 3; ++j) GJ[3 * i + j] = G[2 * i] * k.J[j] + G[2 * i + 1] * k.J[3 + j];
        float v_cov_c[9];
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) v_cov_c[3 * i + j] = k.J[i] * GJ[j] + k.J[3 + i] * GJ[3 + j];
        float v_J[6];
        for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 3; ++j)
                v_J[3 * i + j] = 2.f * (GJ[3 * i] * k.cov_c[j] + GJ[3 * i + 1] * k.cov_c[3 + j] +
                                        GJ[3 * i + 2] * k.cov_c[6 + j]);
        if (k.in_depth) {
            float z = zs, z2 = z * z, z3 = z2 * z;
            float tan_fovx = 0.5f * cam.width / cam.fx, tan_fovy = 0.5f * cam.height / cam.fy;
            float lim_x_pos = (cam.width - cam.cx) / cam.fx + 0.3f * tan_fovx;
            float lim_x_neg = cam.cx / cam.fx + 0.3f * tan_fovx;
            float lim_y_pos = (cam.height - cam.cy) / cam.fy + 0.3f * tan_fovy;
            float lim_y_neg = cam.cy / cam.fy + 0.3f * tan_fovy;
            float rx = fminf(fmaxf(x / z, -lim_x_neg), lim_x_pos);
            float ry = fminf(fmaxf(y / z, -lim_y_neg), lim_y_pos);
            float tx = z * rx, ty = z * ry;
            v_p[2] += -cam.fx / z2 * v_J[0] - cam.fy / z2 * v_J[4] + 2.f * cam.fx * tx / z3 * v_J[2] +
                      2.f * cam.fy * ty / z3 * v_J[5];
            float v_tx = -cam.fx / z2 * v_J[2], v_ty = -cam.fy / z2 * v_J[5];
            // tx = z * clamp(x / z): d/dx = 1, d/dz = 0 inside the limits; d/dz = clamp value outside
            if (k.clamp_x) v_p[2] += rx * v_tx; else v_p[0] += v_tx;
            if (k.clamp_y) v_p[2] += ry * v_ty; else v_p[1] += v_ty;
        }
        // Sigma_c = R Sigma R^T -> v_Sigma = R^T v_Sigma_c R, v_R += 2 v_Sigma_c R Sigma (both symmetric)
        float tmp[9], v_Sigma[9];
        mat3_mul_at(cam.R, v_cov_c, tmp);
        mat3_mul(tmp, cam.R, v_Sigma);
        if (v_R) {
            float Sigma[9], RS[9], G3[9];
            mat3_mul_bt(k.M, k.M, Sigma);
            mat3_mul(cam.R, Sigma, RS);
            mat3_mul(v_cov_c, RS, G3);
            for (int i = 0; i < 9; ++i) v_R[i] += 2.f * G3[i];
        }
        // Sigma = M M^T -> v_M = (v_Sigma + v_Sigma^T) M
        float v_M[9];
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) {
                float acc = 0.f;
                for (int l = 0; l < 3; ++l) acc += (v_Sigma[3 * i + l] + v_Sigma[3 * l + i]) * k.M[3 * l + j];
                v_M[3 * i + j] = acc;
            }
        // M = Rq diag(s)
        float g[9];
        for (int j = 0; j < 3; ++j) {
            v_scale[j] += v_M[j] * k.Rq[j] + v_M[3 + j] * k.Rq[3 + j] + v_M[6 + j] * k.Rq[6 + j];
            for (int i = 0; i < 3; ++i) g[3 * i + j] = v_M[3 * i + j] * scale[j];
        }
        float w = k.qn[0], qx = k.qn[1], qy = k.qn[2], qz = k.qn[3];
        float v_qn[4];
        v_qn[0] = 2.f * (-qz * g[1] + qy * g[2] + qz * g[3] - qx * g[5] - qy * g[6] + qx * g[7]);
        v_qn[1] = 2.f * (qy * g[1] + qz * g[2] + qy * g[3] - 2.f * qx * g[4] - w * g[5] + qz * g[6] +
                         w * g[7] - 2.f * qx * g[8]);
        v_qn[2] = 2.f * (-2.f * qy * g[0] + qx * g[1] + w * g[2] + qx * g[3] + qz * g[5] - w * g[6] +
                         qz * g[7] - 2.f * qy * g[8]);
        v_qn[3] = 2.f * (-2.f * qz * g[0] - w * g[1] + qx * g[2] + w * g[3] - 2.f * qz * g[4] + qy * g[5] +
                         qx * g[6] + qy * g[7]);
        float ss = quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3];
        float dot = (ss > 1e-24f) ? (k.qn[0] * v_qn[0] + k.qn[1] * v_qn[1] + k.qn[2] * v_qn[2] + k.qn[3] * v_qn[3]) : 0.f;
        for (int i = 0; i < 4; ++i) v_quat[i] += (v_qn[i] - k.qn[i] * dot) / k.qnorm;
    }
    // p = R mu + t -> v_mu = R^T v_p, v_R += v_p mu^T, v_t += v_p
    for (int j = 0; j < 3; ++j)
        v_mean[j] += cam.R[j] * v_p[0] + cam.R[3 + j] * v_p[1] + cam.R[6 + j] * v_p[2];
    if (v_R) {
        for (int i = 0; i < 3; ++i) {
            for (int j = 0; j < 3; ++j) v_R[3 * i + j] += v_p[i] * mean[j];
            v_t[i] += v_p[i];
        }
    }
}

}  // namespace avatar
