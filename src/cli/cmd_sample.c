/* cmd_sample.c: `k22 sample`: text to image with a prior and a decoder pipeline folder
 * (sample.h), written as one PNG grid: a row per prompt when several images are asked. */
#include "k22/cli.h"
#include "k22/fsutil.h"
#include "k22/ops.h"
#include "k22/opts.h"
#include "k22/sample.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROMPTS_FILE_MAX (16u << 20)
#define PROMPTS_MAX 4096

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One prompt per line of path (blank lines skipped, CR LF accepted); the strings point into
 * *buf, which the caller frees with *list. */
static k22_status read_prompts(const char *path, char **buf, const char ***list, int *n, k22_err *err)
{
    size_t len = 0;
    *list = NULL, *n = 0;
    k22_status st = k22_fs_read_all(path, PROMPTS_FILE_MAX, buf, &len, err);
    if (st) return k22_err_prefix(err, "--prompts");
    if (memchr(*buf, '\0', len))
        return k22_err_set(err, K22_ERR_FORMAT, "--prompts %s: a NUL byte; expected text, one prompt a line", path);
    const char **l = k22_xcalloc(PROMPTS_MAX, sizeof *l);
    int count = 0, line = 0;
    for (char *p = *buf, *save = NULL, *t = strtok_r(p, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
        line++;
        size_t k = strlen(t);
        if (k && t[k - 1] == '\r') t[--k] = '\0';
        if (strspn(t, " \t") == k) continue;
        if (count == PROMPTS_MAX) {
            free(l);
            return k22_err_set(err, K22_ERR_ARG, "--prompts %s: more than %d prompts (line %d)", path, PROMPTS_MAX,
                               line);
        }
        l[count++] = t;
    }
    if (!count) {
        free(l);
        return k22_err_set(err, K22_ERR_ARG, "--prompts %s: no prompts (one a line)", path);
    }
    *list = l, *n = count;
    return K22_OK;
}

/* The folder of out must exist and be writable: checked before minutes of sampling. */
static k22_status check_out(const char *out, k22_err *err)
{
    size_t k = strlen(out);
    if (k < 5 || strcmp(out + k - 4, ".png"))
        return k22_err_set(err, K22_ERR_ARG, "--out %s: expected a .png file name", out);
    char *copy = k22_xstrdup(out);
    const char *dir = dirname(copy);
    k22_status st = K22_OK;
    if (!k22_fs_is_dir(dir)) st = k22_err_set(err, K22_ERR_IO, "--out %s: folder %s does not exist", out, dir);
    else if (access(dir, W_OK)) st = k22_err_set(err, K22_ERR_IO, "--out %s: folder %s is not writable: %s", out, dir, strerror(errno));
    else if (k22_fs_is_dir(out)) st = k22_err_set(err, K22_ERR_IO, "--out %s is a folder", out);
    free(copy);
    return st;
}

typedef struct {
    const char *prior, *decoder, *prompt, *prompts, *negative, *out, *device, *precision;
    int64_t num_images, seed, steps, prior_steps, height, width, batch, cols;
    double guidance, prior_guidance;
    int quiet;
} sample_args;

static k22_status check_args(const sample_args *a, k22_err *err)
{
    if (!a->prompt == !a->prompts) return k22_err_set(err, K22_ERR_ARG, "give one of --prompt TEXT and --prompts FILE");
    if (a->num_images < 1 || a->num_images > 64) return k22_err_set(err, K22_ERR_ARG, "--num_images %lld: expected 1..64", (long long)a->num_images);
    if (a->steps < 1 || a->steps > 100000 || a->prior_steps < 2 || a->prior_steps > 100000)
        return k22_err_set(err, K22_ERR_ARG, "--steps %lld / --prior_steps %lld: expected at least 1 / 2",
                           (long long)a->steps, (long long)a->prior_steps);
    if (a->height < 1 || a->height > 4096 || a->width < 1 || a->width > 4096)
        return k22_err_set(err, K22_ERR_ARG, "--height %lld --width %lld: expected 1..4096", (long long)a->height,
                           (long long)a->width);
    if (a->batch < 1 || a->batch > 256) return k22_err_set(err, K22_ERR_ARG, "--batch %lld: expected 1..256", (long long)a->batch);
    if (a->cols < 0 || a->cols > 4096) return k22_err_set(err, K22_ERR_ARG, "--cols %lld: expected 0..4096", (long long)a->cols);
    if (a->seed < 0) return k22_err_set(err, K22_ERR_ARG, "--seed %lld: expected >= 0", (long long)a->seed);
    if (!isfinite(a->guidance) || !isfinite(a->prior_guidance))
        return k22_err_set(err, K22_ERR_ARG, "guidance scales must be finite numbers");
    if (k22_backend_name_check(a->device, err)) return K22_ERR_ARG; /* a bad option: exit 2 */
    return check_out(a->out, err);
}

/* The grid must fit a PNG (65535 pixels a side): checked before any sampling. */
static k22_status check_grid(const k22_sampler *s, const k22_sample_opts *o, int n, int *cols, k22_err *err)
{
    int lh, lw, h, w;
    k22_status st = k22_sampler_sizes(s, o->height, o->width, &lh, &lw, &h, &w, err);
    if (st) return st;
    if (*cols > n) *cols = n;
    int rows = (n + *cols - 1) / *cols;
    if ((int64_t)rows * h > 65535 || (int64_t)*cols * w > 65535)
        return k22_err_set(err, K22_ERR_ARG, "%d images of %d x %d in %d columns make a grid over 65535 pixels "
                           "a side (PNG's limit): fewer prompts or images, or another --cols", n, w, h, *cols);
    return K22_OK;
}

/* Runs the prompts in batches of a->batch prompts into rgb (all images, in order). */
static k22_status run_batches(k22_sampler *s, const sample_args *a, const char **list, int np,
                              k22_sample_opts *o, uint8_t **rgb, int *h, int *w, k22_err *err)
{
    k22_status st = K22_OK;
    size_t per = 0;
    *rgb = NULL;
    for (int first = 0; first < np && !st; first += (int)a->batch) {
        int cnt = np - first < (int)a->batch ? np - first : (int)a->batch;
        o->image_offset = (int64_t)first * o->num_images;
        double t0 = now_s();
        k22_sample_result r;
        st = k22_sample_images(s, list + first, cnt, o, &r, err);
        if (st) break;
        if (!*rgb) {
            *h = r.height, *w = r.width;
            per = (size_t)r.height * (size_t)r.width * 3;
            *rgb = k22_xmalloc((size_t)np * (size_t)o->num_images * per);
        }
        memcpy(*rgb + (size_t)o->image_offset * per, r.rgb, (size_t)r.n * per);
        if (!a->quiet)
            fprintf(stderr, "k22 sample: prompts %d..%d of %d: %d image(s) %d x %d in %.2f s\n", first + 1,
                    first + cnt, np, r.n, r.width, r.height, now_s() - t0);
        k22_sample_result_free(&r);
    }
    return st;
}

static int run(const sample_args *a, k22_cmd_spec *spec)
{
    k22_err err;
    k22_status st = check_args(a, &err);
    char *buf = NULL;
    const char **list = NULL, *one[1] = {a->prompt};
    int np = 1;
    k22_sampler *s = NULL;
    uint8_t *rgb = NULL;
    if (!st && a->prompts) st = read_prompts(a->prompts, &buf, &list, &np, &err);
    if (st) goto out;
    if (!a->quiet) k22_opts_print(spec, stderr);
    double t0 = now_s();
    st = k22_sampler_open(&s, a->prior, a->decoder, a->device, a->precision, &err);
    if (st) goto out;
    k22_sample_opts o;
    k22_sample_opts_default(&o);
    o.negative_prompt = a->negative, o.num_images = (int)a->num_images, o.seed = (uint64_t)a->seed;
    o.prior_steps = (int)a->prior_steps, o.decoder_steps = (int)a->steps;
    o.prior_guidance_scale = a->prior_guidance, o.guidance_scale = a->guidance;
    o.height = (int)a->height, o.width = (int)a->width;
    int h = 0, w = 0, n = np * o.num_images;
    int cols = a->cols ? (int)a->cols : o.num_images > 1 ? o.num_images : (int)ceil(sqrt((double)n));
    st = check_grid(s, &o, n, &cols, &err);
    if (!st) st = run_batches(s, a, list ? list : one, np, &o, &rgb, &h, &w, &err);
    if (!st) st = k22_sample_grid_png(a->out, rgb, n, h, w, cols, &err);
    if (!st && !a->quiet)
        fprintf(stderr, "k22 sample: %s: %d image(s) of %d x %d in %.2f s\n", a->out, n, w, h, now_s() - t0);
out:
    if (st) fprintf(stderr, "k22 sample: %s\n", err.msg);
    k22_sampler_free(s);
    free(rgb);
    free(list);
    free(buf);
    return st == K22_OK ? 0 : st == K22_ERR_ARG ? 2 : 1;
}

int k22_cmd_sample(int argc, char **argv)
{
    sample_args a = {0};
    const k22_opt opts[] = {
        {"prior", K22_OPT_STR, &a.prior, NULL, "prior pipeline folder (prior, text_encoder, image_encoder, tokenizer, scheduler)", NULL, NULL, 1},
        {"decoder", K22_OPT_STR, &a.decoder, NULL, "decoder pipeline folder (unet, movq, scheduler)", NULL, NULL, 1},
        {"prompt", K22_OPT_STR, &a.prompt, NULL, "the text to draw", NULL, NULL, 0},
        {"prompts", K22_OPT_STR, &a.prompts, NULL, "a file of prompts, one a line, drawn into one grid (a row per prompt)", NULL, NULL, 0},
        {"negative_prompt", K22_OPT_STR, &a.negative, NULL, "what to steer away from (default: none, the pipelines' zero-image embedding)", NULL, NULL, 0},
        {"num_images", K22_OPT_INT, &a.num_images, "1", "images per prompt", NULL, NULL, 0},
        {"seed", K22_OPT_INT, &a.seed, "0", "seed of k22's counter-based noise (an image's noise depends only on seed and its index)", NULL, NULL, 0},
        {"steps", K22_OPT_INT, &a.steps, "100", "decoder denoising steps (KandinskyV22Pipeline's default)", NULL, NULL, 0},
        {"prior_steps", K22_OPT_INT, &a.prior_steps, "25", "prior denoising steps (KandinskyV22PriorPipeline's default)", NULL, NULL, 0},
        {"guidance_scale", K22_OPT_FLOAT, &a.guidance, "4.0", "decoder classifier-free guidance (off at <= 1)", NULL, NULL, 0},
        {"prior_guidance_scale", K22_OPT_FLOAT, &a.prior_guidance, "4.0", "prior classifier-free guidance (off at <= 1)", NULL, NULL, 0},
        {"height", K22_OPT_INT, &a.height, "512", "image height, rounded up to a multiple of the MoVQ factor squared", NULL, NULL, 0},
        {"width", K22_OPT_INT, &a.width, "512", "image width, rounded likewise", NULL, NULL, 0},
        {"out", K22_OPT_STR, &a.out, NULL, "the PNG to write (one grid of every image)", NULL, NULL, 1},
        {"batch", K22_OPT_INT, &a.batch, "4", "prompts per batch (memory); an image's noise is keyed by its index, not by its batch", NULL, NULL, 0},
        {"cols", K22_OPT_INT, &a.cols, "0", "grid columns (0: num_images, or a square grid for one image a prompt)", NULL, NULL, 0},
        {"device", K22_OPT_STR, &a.device, "cpu", K22_DEVICE_HELP, "K22_DEVICE", NULL, 0},
        {"mixed_precision", K22_OPT_CHOICE, &a.precision, "no",
         "bf16/fp16 operands for matmuls, convolutions and attention, fp32 accumulation (as train-*; emulated on cpu, "
         "not on cpu-ref)", NULL, "no|fp16|bf16", 0},
        {"quiet", K22_OPT_FLAG, &a.quiet, NULL, "no settings table or progress lines", NULL, NULL, 0},
    };
    k22_cmd_spec spec = {
        .usage = "k22 sample --prior DIR --decoder DIR --prompt TEXT | --prompts FILE --out FILE.png [options]",
        .summary = "Text to image as diffusers' KandinskyV22PriorPipeline and KandinskyV22Pipeline do it: CLIP text "
                   "encoder, prior denoising (UnCLIPScheduler) with guidance against the negative or empty prompt, "
                   "then UNet denoising (DDPMScheduler) with guidance against the negative image embedding, MoVQ "
                   "decode, and one PNG grid. Exit 2 on a bad option, 1 on an unreadable folder or unwritable file.",
        .opts = opts,
        .nopts = (int)(sizeof opts / sizeof opts[0]),
    };
    int rc = k22_opts_parse_cli(&spec, argc, argv, "sample");
    if (rc >= 0) return rc;
    return run(&a, &spec);
}
