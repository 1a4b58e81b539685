// Real spherical harmonics up to degree 3 (the 3DGS / gsplat basis and sign convention):
// color = max(sum_k Y_k(dir) c_k + 0.5, 0), dir = normalise(mean - camera centre).
#pragma once

#include "avatar/common.h"

namespace avatar {

constexpr float SH_C0 = 0.28209479177387814f;
constexpr float SH_C1 = 0.4886025119029199f;
constexpr float SH_C2_0 = 1.0925484305920792f, SH_C2_1 = -1.0925484305920792f,
                SH_C2_2 = 0.31539156525252005f, SH_C2_3 = -1.0925484305920792f,
                SH_C2_4 = 0.5462742152960396f;
constexpr float SH_C3_0 = -0.5900435899266435f, SH_C3_1 = 2.890611442640554f,
                SH_C3_2 = -0.4570457994644658f, SH_C3_3 = 0.3731763325901154f,
                SH_C3_4 = -0.4570457994644658f, SH_C3_5 = 1.445305721320277f,
                SH_C3_6 = -0.5900435899266435f;

AVATAR_HD int sh_count(int degree) { return (degree + 1) * (degree + 1); }

// Basis values Y[0..(deg+1)^2) at unit direction (x, y, z); dY (optional) gets d/d(x,y,z), 3 per k.
AVATAR_HD void sh_basis(int deg, float x, float y, float z, float* Y, float* dY) {
    Y[0] = SH_C0;
    if (dY) { dY[0] = dY[1] = dY[2] = 0.f; }
    if (deg < 1) return;
    Y[1] = -SH_C1 * y; Y[2] = SH_C1 * z; Y[3] = -SH_C1 * x;
    if (dY) {
        dY[3] = 0.f; dY[4] = -SH_C1; dY[5] = 0.f;
        dY[6] = 0.f; dY[7] = 0.f; dY[8] = SH_C1;
        dY[9] = -SH_C1; dY[10] = 0.f; dY[11] = 0.f;
    }
    if (deg < 2) return;
    float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
    Y[4] = SH_C2_0 * xy; Y[5] = SH_C2_1 * yz; Y[6] = SH_C2_2 * (2.f * zz - xx - yy);
    Y[7] = SH_C2_3 * xz; Y[8] = SH_C2_4 * (xx - yy);
    if (dY) {
        float* d = dY + 12;
        d[0] = SH_C2_0 * y; d[1] = SH_C2_0 * x; d[2] = 0.f;
        d[3] = 0.f; d[4] = SH_C2_1 * z; d[5] = SH_C2_1 * y;
        d[6] = SH_C2_2 * -2.f * x; d[7] = SH_C2_2 * -2.f * y; d[8] = SH_C2_2 * 4.f * z;
        d[9] = SH_C2_3 * z; d[10] = 0.f; d[11] = SH_C2_3 * x;
        d[12] = SH_C2_4 * 2.f * x; d[13] = SH_C2_4 * -2.f * y; d[14] = 0.f;
    }
    if (deg < 3) return;
    Y[9] = SH_C3_0 * y * (3.f * xx - yy);
    Y[10] = SH_C3_1 * xy * z;
    Y[11] = SH_C3_2 * y * (4.f * zz - xx - yy);
    Y[12] = SH_C3_3 * z * (2.f * zz - 3.f * xx - 3.f * yy);
    Y[13] = SH_C3_4 * x * (4.f * zz - xx - yy);
    Y[14] = SH_C3_5 * z * (xx - yy);
    Y[15] = SH_C3_6 * x * (xx - 3.f * yy);
    if (dY) {
        float* d = dY + 27;
        d[0] = SH_C3_0 * 6.f * xy; d[1] = SH_C3_0 * (3.f * xx - 3.f * yy); d[2] = 0.f;
        d[3] = SH_C3_1 * yz; d[4] = SH_C3_1 * xz; d[5] = SH_C3_1 * xy;
        d[6] = SH_C3_2 * -2.f * xy; d[7] = SH_C3_2 * (4.f * zz - xx - 3.f * yy); d[8] = SH_C3_2 * 8.f * yz;
        d[9] = SH_C3_3 * -6.f * xz; d[10] = SH_C3_3 * -6.f * yz; d[11] = SH_C3_3 * (6.f * zz - 3.f * xx - 3.f * yy);
        d[12] = SH_C3_4 * (4.f * zz - 3.f * xx - yy); d[13] = SH_C3_4 * -2.f * xy; d[14] = SH_C3_4 * 8.f * xz;
        d[15] = SH_C3_5 * 2.f * xz; d[16] = SH_C3_5 * -2.f * yz; d[17] = SH_C3_5 * (xx - yy);
        d[18] = SH_C3_6 * (3.f * xx - 3.f * yy); d[19] = SH_C3_6 * -6.f * xy; d[20] = 0.f;
    }
}

// Unnormalised view vector d = mean - campos -> unit dir and 1/|d| (zero vector -> zero dir).
AVATAR_HD float sh_direction(const float* mean, const float* campos, float* dir) {
    float d0 = mean[0] - campos[0], d1 = mean[1] - campos[1], d2 = mean[2] - campos[2];
    float n = sqrtf(fmaxf(d0 * d0 + d1 * d1 + d2 * d2, 1e-24f));
    dir[0] = d0 / n; dir[1] = d1 / n; dir[2] = d2 / n;
    return n;
}

// coeffs [K,3] (K >= (deg+1)^2) -> rgb[3].
AVATAR_HD void sh_forward(int deg, const float* coeffs, const float* dir, float* rgb) {
    float Y[16];
    sh_basis(deg, dir[0], dir[1], dir[2], Y, nullptr);
    int K = sh_count(deg);
    for (int ch = 0; ch < 3; ++ch) {
        float acc = 0.f;
        for (int k = 0; k < K; ++k) acc += Y[k] * coeffs[3 * k + ch];
        rgb[ch] = fmaxf(acc + 0.5f, 0.f);
    }
}

// Backward: accumulates v_coeffs [K,3] (+=), v_mean[3] (+=, through the view direction) and, when
// not null, v_campos[3] (+=).
AVATAR_HD void sh_backward(int deg, const float* coeffs, const float* mean, const float* campos,
                           const float* v_rgb, float* v_coeffs, float* v_mean, float* v_campos = nullptr) {
    float dir[3];
    float n = sh_direction(mean, campos, dir);
    float Y[16], dY[48];
    sh_basis(deg, dir[0], dir[1], dir[2], Y, dY);
    int K = sh_count(deg);
    float v_c[3];
    for (int ch = 0; ch < 3; ++ch) {
        float acc = 0.f;
        for (int k = 0; k < K; ++k) acc += Y[k] * coeffs[3 * k + ch];
        v_c[ch] = (acc + 0.5f >= 0.f) ? v_rgb[ch] : 0.f;       // clamp_min(., 0) passes at >= 0
    }
    float v_dir[3] = {0.f, 0.f, 0.f};
    for (int k = 0; k < K; ++k) {
        float s = 0.f;
        for (int ch = 0; ch < 3; ++ch) {
            v_coeffs[3 * k + ch] += Y[k] * v_c[ch];
            s += coeffs[3 * k + ch] * v_c[ch];
        }
        for (int i = 0; i < 3; ++i) v_dir[i] += dY[3 * k + i] * s;
    }
    float d0 = mean[0] - campos[0], d1 = mean[1] - campos[1], d2 = mean[2] - campos[2];
    float ss = d0 * d0 + d1 * d1 + d2 * d2;
    float dot = (ss > 1e-24f) ? (dir[0] * v_dir[0] + dir[1] * v_dir[1] + dir[2] * v_dir[2]) : 0.f;
    for (int i = 0; i < 3; ++i) {
        const float v_d = (v_dir[i] - dir[i] * dot) / n;
        v_mean[i] += v_d;
        if (v_campos) v_campos[i] -= v_d;
    }
}

// campos = -R^T t: accumulate v_campos into the viewmat's v_R[9] and v_t[3].
AVATAR_HD void camera_center_backward(const float* viewmat, const float* v_campos, float* v_R, float* v_t) {
    for (int i = 0; i < 3; ++i) {
        const float t_i = viewmat[4 * i + 3];
        for (int j = 0; j < 3; ++j) {
            v_R[3 * i + j] -= t_i * v_campos[j];
            v_t[i] -= viewmat[4 * i + j] * v_campos[j];
        }
    }
}

// Camera centre in world coordinates from a row-major 4x4 world-to-camera matrix: -R^T t.
AVATAR_HD void camera_center(const float* viewmat, float* campos) {
    for (int j = 0; j < 3; ++j)
        campos[j] = -(viewmat[j] * viewmat[3] + viewmat[4 + j] * viewmat[7] + viewmat[8 + j] * viewmat[11]);
}

}  // namespace avatar
