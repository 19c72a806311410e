/* test_ops_pool_affine.c: avgpool2x and chan_affine (the UNet's down-sampling and scale_shift
 * ops): exact values on integer inputs, the reference backward against central finite
 * differences, fast against reference (forward, and backward accumulating onto non-zero
 * gradients), y aliasing x, NULL scale / shift / gradients; a canary. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness/harness.h"
#include "k22/ops.h"

static float *fvec(int64_t n, uint64_t seed)
{
    float *v = calloc(n > 0 ? (size_t)n : 1, sizeof(float));
    if (seed) k22_test_fill(v, n, seed, -1.0f, 1.0f);
    return v;
}

/* Integer-valued inputs: pooled sums of 4 are exact, so the result must be bit-exact. */
static void exact_values(const k22_backend *be)
{
    float x[2 * 4 * 6], y[2 * 2 * 3], dx[2 * 4 * 6] = {0};
    for (int i = 0; i < 48; i++) x[i] = (float)(i % 11) - 5.0f;
    be->avgpool2x_fwd(be->ctx, y, x, 1, 2, 4, 6);
    int ok = 1;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++) {
                const float *p = x + c * 24 + 2 * i * 6 + 2 * j;
                ok &= y[c * 6 + i * 3 + j] == (p[0] + p[1] + p[6] + p[7]) / 4.0f;
            }
    CHECK_MSG(ok, "%s avgpool2x: wrong value on integer input", be->name);
    float dy[12];
    for (int i = 0; i < 12; i++) dy[i] = (float)(4 * i);
    be->avgpool2x_bwd(be->ctx, dx, dy, 1, 2, 4, 6);
    ok = 1;
    for (int k = 0; k < 48; k++) {
        int c = k / 24, r = (k % 24) / 6, q = k % 6;
        ok &= dx[k] == dy[c * 6 + (r / 2) * 3 + q / 2] / 4.0f;
    }
    CHECK_MSG(ok, "%s avgpool2x backward: wrong value on integer input", be->name);
    float s[2] = {2, -3}, t[2] = {1, 0.5f}, a[2 * 3] = {1, 2, 3, 4, 5, 6}, b[6];
    be->chan_affine_fwd(be->ctx, b, a, s, t, 1.0f, 1, 2, 3);
    CHECK_MSG(b[0] == 4 && b[2] == 10 && b[3] == -7.5f && b[5] == -11.5f,
              "%s chan_affine: x*(1+s)+t wrong", be->name);
    be->chan_affine_fwd(be->ctx, a, a, s, NULL, 0.0f, 1, 2, 3); /* in place, no shift */
    CHECK_MSG(a[0] == 2 && a[5] == -18, "%s chan_affine in place: wrong", be->name);
}

typedef struct {
    int B, C, H, W, has_scale, has_shift;
    float off;
} pa_case;

/* L = sum dy * f(x, scale, shift) in double. */
static double loss(const k22_backend *be, const pa_case *c, int op, const float *x,
                   const float *sc, const float *sh, const float *dy, float *y)
{
    int64_t S = (int64_t)c->H * c->W, ny;
    if (op == 0) {
        be->avgpool2x_fwd(be->ctx, y, x, c->B, c->C, c->H, c->W);
        ny = (int64_t)c->B * c->C * S / 4;
    } else {
        be->chan_affine_fwd(be->ctx, y, x, c->has_scale ? sc : NULL, c->has_shift ? sh : NULL,
                            c->off, c->B, c->C, S);
        ny = (int64_t)c->B * c->C * S;
    }
    double L = 0;
    for (int64_t i = 0; i < ny; i++) L += (double)dy[i] * y[i];
    return L;
}

/* Central differences over every input of one op; returns the number of inputs that failed.
 * corrupt scales the analytic x gradient by 1.01 (the canary). */
static int fd_case(const k22_backend *be, const pa_case *c, int op, int corrupt)
{
    int64_t S = (int64_t)c->H * c->W, nx = (int64_t)c->B * c->C * S, np = (int64_t)c->B * c->C;
    float *x = fvec(nx, 11), *sc = fvec(np, 12), *sh = fvec(np, 13), *dy = fvec(nx, 14);
    float *y = fvec(nx, 0), *gx = fvec(nx, 0), *gs = fvec(np, 0), *gt = fvec(np, 0);
    if (op == 0)
        be->avgpool2x_bwd(be->ctx, gx, dy, c->B, c->C, c->H, c->W);
    else
        be->chan_affine_bwd(be->ctx, gx, c->has_scale ? gs : NULL, c->has_shift ? gt : NULL, dy, x,
                            c->has_scale ? sc : NULL, c->off, c->B, c->C, S);
    if (corrupt)
        for (int64_t i = 0; i < nx; i++) gx[i] *= 1.01f;
    float *in[3] = {x, sc, sh}, *g[3] = {gx, gs, gt};
    int64_t n[3] = {nx, np, np};
    int bad = 0;
    const double h = 1e-2, tol = 1e-3;
    for (int k = 0; k < (op == 0 ? 1 : 3); k++) {
        if ((k == 1 && !c->has_scale) || (k == 2 && !c->has_shift)) continue;
        double maxfd = 0, maxerr = 0;
        float *fd = fvec(n[k], 0);
        for (int64_t i = 0; i < n[k]; i++) {
            float o = in[k][i];
            in[k][i] = o + (float)h;
            double lp = loss(be, c, op, x, sc, sh, dy, y);
            float xp = in[k][i];
            in[k][i] = o - (float)h;
            double lm = loss(be, c, op, x, sc, sh, dy, y);
            float xm = in[k][i];
            in[k][i] = o;
            fd[i] = (float)((lp - lm) / ((double)xp - xm));
            maxfd = fmax(maxfd, fabs(fd[i]));
        }
        int ok = 1;
        for (int64_t i = 0; i < n[k]; i++) {
            double e = fabs((double)g[k][i] - fd[i]);
            maxerr = fmax(maxerr, e);
            ok &= e <= tol * maxfd + tol * fabs(fd[i]);
        }
        if (!corrupt)
            printf("fd %-11s input %d (B%d C%d %dx%d scale %d shift %d off %g): max err %.2e of max|fd| %.2e\n",
                   op ? "chan_affine" : "avgpool2x", k, c->B, c->C, c->H, c->W, c->has_scale,
                   c->has_shift, c->off, maxerr, maxfd);
        bad += !ok;
        free(fd);
    }
    free(x), free(sc), free(sh), free(dy), free(y), free(gx), free(gs), free(gt);
    return bad;
}

/* Fast against reference: forward, and backward accumulating onto gradients pre-filled with
 * the same values (checks += and the NULL-gradient skip). */
static void fast_vs_ref(const k22_backend *ref, const k22_backend *fast, const pa_case *c)
{
    int64_t S = (int64_t)c->H * c->W, nx = (int64_t)c->B * c->C * S, np = (int64_t)c->B * c->C;
    float *x = fvec(nx, 21), *sc = fvec(np, 22), *sh = fvec(np, 23), *dy = fvec(nx, 24);
    float *y0 = fvec(nx, 0), *y1 = fvec(nx, 0);
    const float *s = c->has_scale ? sc : NULL, *t = c->has_shift ? sh : NULL;
    ref->avgpool2x_fwd(ref->ctx, y0, x, c->B, c->C, c->H, c->W);
    fast->avgpool2x_fwd(fast->ctx, y1, x, c->B, c->C, c->H, c->W);
    k22_check_close("avgpool2x fwd fast vs ref", y1, y0, nx / 4, 1e-6, 1e-6);
    float *g0 = fvec(nx, 25), *g1 = fvec(nx, 25);
    ref->avgpool2x_bwd(ref->ctx, g0, dy, c->B, c->C, c->H, c->W);
    fast->avgpool2x_bwd(fast->ctx, g1, dy, c->B, c->C, c->H, c->W);
    k22_check_close("avgpool2x bwd fast vs ref", g1, g0, nx, 1e-6, 1e-6);
    ref->chan_affine_fwd(ref->ctx, y0, x, s, t, c->off, c->B, c->C, S);
    fast->chan_affine_fwd(fast->ctx, y1, x, s, t, c->off, c->B, c->C, S);
    k22_check_close("chan_affine fwd fast vs ref", y1, y0, nx, 1e-6, 1e-6); /* fma or not */
    float *s0 = fvec(np, 26), *s1 = fvec(np, 26), *t0 = fvec(np, 27), *t1 = fvec(np, 27);
    memcpy(g1, g0, (size_t)nx * sizeof(float));
    ref->chan_affine_bwd(ref->ctx, g0, c->has_scale ? s0 : NULL, t0, dy, x, s, c->off, c->B, c->C, S);
    fast->chan_affine_bwd(fast->ctx, g1, c->has_scale ? s1 : NULL, t1, dy, x, s, c->off, c->B, c->C, S);
    /* dscale / dshift sum S products: fast sums in f32, the reference in double */
    k22_check_close("chan_affine bwd dx fast vs ref", g1, g0, nx, 1e-6, 1e-6);
    k22_check_close("chan_affine bwd dscale fast vs ref", s1, s0, np, 1e-5 * sqrt((double)S), 1e-5);
    k22_check_close("chan_affine bwd dshift fast vs ref", t1, t0, np, 1e-5 * sqrt((double)S), 1e-5);
    float *bufs[] = {x, sc, sh, dy, y0, y1, g0, g1, s0, s1, t0, t1};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

int main(void)
{
    k22_backend *ref = k22_backend_cpu_new(1), *fast = k22_backend_cpu_new(0);
    exact_values(ref);
    exact_values(fast);
    const pa_case cases[] = {
        {2, 3, 4, 6, 1, 1, 1.0f},  /* scale_shift */
        {1, 2, 6, 4, 1, 0, 0.0f},  /* broadcast multiply */
        {2, 2, 2, 2, 0, 1, 0.0f},  /* broadcast add */
        {1, 4, 8, 2, 1, 1, 0.5f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_MSG(fd_case(ref, &cases[i], 0, 0) == 0, "avgpool2x case %zu: gradient off", i);
        CHECK_MSG(fd_case(ref, &cases[i], 1, 0) == 0, "chan_affine case %zu: gradient off", i);
        fast_vs_ref(ref, fast, &cases[i]);
    }
    const pa_case big = {2, 64, 32, 24, 1, 1, 1.0f};
    fast_vs_ref(ref, fast, &big);
    CHECK_MSG(fd_case(ref, &cases[0], 1, 1) == 1, "canary: a 1%% gradient error went unnoticed");
    CHECK_MSG(fd_case(ref, &cases[0], 0, 1) == 1, "canary: a 1%% avgpool gradient error went unnoticed");
    k22_backend_free(ref);
    k22_backend_free(fast);
    return k22_test_finish("test_ops_pool_affine");
}
