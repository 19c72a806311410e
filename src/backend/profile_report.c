/* profile_report.c: the profiler's table (profile.h, k22_prof_report): ops by total time, then
 * the sum of op times against the wall time, then the same figures as grep-able lines, then the
 * GEMM-class calls by shape. */
#include "k22/profile.h"

#include <stdlib.h>

static int by_ms_desc(const void *x, const void *y)
{
    const k22_prof_stat *a = x, *b = y;
    return (a->ms < b->ms) - (a->ms > b->ms);
}

/* TFLOP/s of flops in ms; 0 when no time was measured. */
static double tflops(double flops, double ms)
{
    return ms > 0 ? flops / (ms * 1e9) : 0;
}

static int shapes_by_ms_desc(const void *x, const void *y)
{
    const k22_prof_shape_stat *a = x, *b = y;
    return (a->ms < b->ms) - (a->ms > b->ms);
}

/* The GEMM-class calls by shape (profile.h): the slowest as a table, then every one as a line. */
static void report_shapes(const k22_prof *p, double gemm_ms, double ps, FILE *out)
{
    int n = k22_prof_nshapes(p);
    if (!n) return;
    k22_prof_shape_stat *s = k22_xmalloc((size_t)n * sizeof *s);
    for (int i = 0; i < n; i++) s[i] = k22_prof_shape_at(p, i);
    qsort(s, (size_t)n, sizeof *s, shapes_by_ms_desc);
    int top = n < K22_PROF_TOP_SHAPES ? n : K22_PROF_TOP_SHAPES;
    fprintf(out, "\nGEMM-class calls by shape, the %d slowest of %d:\n", top, n);
    fprintf(out, "%-18s %-44s %10s %10s %7s %9s\n", "op", "shape", "calls/step", "ms/step", "share",
            "TFLOP/s");
    for (int i = 0; i < top; i++)
        fprintf(out, "%-18s %-44s %10.1f %10.3f %6.1f%% %9.4f\n", s[i].op, s[i].shape,
                s[i].calls / ps, s[i].ms / ps, gemm_ms > 0 ? 100 * s[i].ms / gemm_ms : 0,
                tflops(s[i].flops, s[i].ms));
    for (int i = 0; i < n; i++)
        fprintf(out,
                "k22_prof_shape op=%s shape=%s calls=%lld ms=%.4f ms_per_step=%.4f gemm_share=%.5f "
                "gflop=%.6f tflops=%.5f\n",
                s[i].op, s[i].shape, (long long)s[i].calls, s[i].ms, s[i].ms / ps,
                gemm_ms > 0 ? s[i].ms / gemm_ms : 0, s[i].flops / 1e9, tflops(s[i].flops, s[i].ms));
    free(s);
}

void k22_prof_report(k22_prof *p, double wall_ms, int64_t steps, FILE *out)
{
    k22_prof_collect(p);
    if (wall_ms <= 0) wall_ms = k22_prof_wall_ms(p);
    if (steps < 1) steps = 1;
    int n = 0, nops = k22_prof_nops();
    k22_prof_stat *s = k22_xmalloc((size_t)nops * sizeof *s);
    double ops_ms = 0, gemm_ms = 0, gemm_flops = 0;
    int64_t calls = 0, gemm_calls = 0;
    for (int i = 0; i < nops; i++) {
        k22_prof_stat st = k22_prof_at(p, i);
        if (!st.calls) continue;
        s[n++] = st;
        ops_ms += st.ms;
        calls += st.calls;
        if (st.gemm) gemm_ms += st.ms, gemm_flops += st.flops, gemm_calls += st.calls;
    }
    qsort(s, (size_t)n, sizeof *s, by_ms_desc);
    double ps = (double)steps;
    fprintf(out, "\nk22 profile: %lld step(s) on %s, times by %s\n", (long long)steps,
            k22_prof_device(p), k22_prof_timer_name(p));
    fprintf(out, "%-20s %9s %12s %10s %7s %11s %9s\n", "op", "calls", "total ms", "ms/step",
            "share", "GFLOP/step", "TFLOP/s");
    for (int i = 0; i < n; i++) {
        fprintf(out, "%-20s %9lld %12.3f %10.3f %6.1f%%", s[i].op, (long long)s[i].calls, s[i].ms,
                s[i].ms / ps, ops_ms > 0 ? 100 * s[i].ms / ops_ms : 0);
        if (s[i].gemm)
            fprintf(out, " %11.4f %9.4f\n", s[i].flops / ps / 1e9, tflops(s[i].flops, s[i].ms));
        else
            fputc('\n', out);
    }
    fprintf(out, "%-20s %9lld %12.3f %10.3f %6.1f%% %11.4f %9.4f\n", "GEMM-class ops",
            (long long)gemm_calls, gemm_ms, gemm_ms / ps, ops_ms > 0 ? 100 * gemm_ms / ops_ms : 0,
            gemm_flops / ps / 1e9, tflops(gemm_flops, gemm_ms));
    fprintf(out, "%-20s %9lld %12.3f %10.3f %6.1f%%\n", "all ops", (long long)calls, ops_ms,
            ops_ms / ps, ops_ms > 0 ? 100.0 : 0);
    fprintf(out, "%-20s %9s %12.3f %10.3f\n", "wall", "", wall_ms, wall_ms / ps);
    fprintf(out, "%-20s %9s %12.3f %10.3f %6.1f%% of wall: host time between ops, launch gaps\n",
            "gap", "", wall_ms - ops_ms, (wall_ms - ops_ms) / ps,
            wall_ms > 0 ? 100 * (wall_ms - ops_ms) / wall_ms : 0);
    for (int i = 0; i < n; i++)
        fprintf(out, "k22_prof op=%s calls=%lld ms=%.4f ms_per_step=%.4f share=%.5f gflop=%.6f "
                "tflops=%.5f steps=%lld\n", s[i].op, (long long)s[i].calls, s[i].ms, s[i].ms / ps,
                ops_ms > 0 ? s[i].ms / ops_ms : 0, s[i].flops / 1e9, tflops(s[i].flops, s[i].ms),
                (long long)steps);
    fprintf(out,
            "k22_prof_total steps=%lld wall_ms=%.4f ops_ms=%.4f gap_ms=%.4f gemm_ms=%.4f "
            "gemm_gflop=%.6f device=%s timer=%s\n",
            (long long)steps, wall_ms, ops_ms, wall_ms - ops_ms, gemm_ms, gemm_flops / 1e9,
            k22_prof_device(p), k22_prof_timer_name(p));
    report_shapes(p, gemm_ms, ps, out);
    fflush(out);
    free(s);
}
