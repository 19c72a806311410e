/* lr_schedule.c: diffusers' LambdaLR schedules evaluated in the scripts' Python double order and
 * stepped as accelerate steps them (include/k22/lr_schedule.h). */
#include "k22/lr_schedule.h"

#include <math.h>
#include <string.h>

#define K22_LR_PI 3.141592653589793 /* Python math.pi */

static const char *const k22_lr_names[K22_LR_COUNT] = {
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
};

const char *k22_lr_kind_name(k22_lr_kind k)
{
    return (unsigned)k < K22_LR_COUNT ? k22_lr_names[k] : "?";
}

k22_status k22_lr_kind_parse(const char *name, k22_lr_kind *out, k22_err *err)
{
    for (int i = 0; i < K22_LR_COUNT; i++)
        if (name && strcmp(name, k22_lr_names[i]) == 0) {
            *out = (k22_lr_kind)i;
            return K22_OK;
        }
    return k22_err_set(err, K22_ERR_ARG,
                       "--lr_scheduler '%s': expected constant, constant_with_warmup, linear, "
                       "cosine, cosine_with_restarts or polynomial",
                       name ? name : "(null)");
}

k22_status k22_lr_schedule_init(k22_lr_schedule *s, k22_lr_kind kind, double base_lr,
                                int64_t lr_warmup_steps, int64_t max_train_steps, int grad_accum,
                                int world_size, k22_err *err)
{
    memset(s, 0, sizeof *s);
    if ((unsigned)kind >= K22_LR_COUNT)
        return k22_err_set(err, K22_ERR_ARG, "lr schedule: unknown kind %d", (int)kind);
    if (!(base_lr > 0) || grad_accum < 1 || world_size < 1 || lr_warmup_steps < 0 ||
        max_train_steps < 0)
        return k22_err_set(err, K22_ERR_ARG,
                           "lr schedule: need learning_rate > 0 (got %g), gradient_accumulation_steps "
                           ">= 1 (got %d), world size >= 1 (got %d), lr_warmup_steps >= 0 (got %lld), "
                           "max_train_steps >= 0 (got %lld)",
                           base_lr, grad_accum, world_size, (long long)lr_warmup_steps,
                           (long long)max_train_steps);
    if (lr_warmup_steps > INT64_MAX / grad_accum || max_train_steps > INT64_MAX / grad_accum)
        return k22_err_set(err, K22_ERR_ARG, "lr schedule: steps times accumulation overflows");
    s->kind = kind;
    s->base_lr = base_lr;
    s->warmup = lr_warmup_steps * grad_accum;
    s->total = max_train_steps * grad_accum;
    s->world_size = world_size;
    s->num_cycles = kind == K22_LR_COSINE ? 0.5 : 1.0;
    s->lr_end = 1e-7;
    s->power = 1.0;
    if (kind == K22_LR_POLYNOMIAL && !(base_lr > s->lr_end))
        return k22_err_set(err, K22_ERR_ARG,
                           "lr schedule polynomial: learning_rate %g must exceed lr_end %g", base_lr,
                           s->lr_end);
    return K22_OK;
}

static int64_t k22_max1(int64_t v) { return v > 1 ? v : 1; }

/* Each branch keeps the Python expression's operation order. */
double k22_lr_lambda(const k22_lr_schedule *s, int64_t step)
{
    if (s->kind == K22_LR_CONSTANT) return 1.0;
    if (step < s->warmup) return (double)step / (double)k22_max1(s->warmup);
    double progress = (double)(step - s->warmup) / (double)k22_max1(s->total - s->warmup);
    switch (s->kind) {
    case K22_LR_CONSTANT_WITH_WARMUP:
        return 1.0;
    case K22_LR_LINEAR:
        /* f_min + (f_max - f_min) * max(0, (total - step) / max(1, total - warmup)) */
        progress = (double)(s->total - step) / (double)k22_max1(s->total - s->warmup);
        return 0.0 + 1.0 * (progress > 0.0 ? progress : 0.0);
    case K22_LR_COSINE: {
        double v = 0.5 * (1.0 + cos(K22_LR_PI * s->num_cycles * 2.0 * progress));
        return v > 0.0 ? v : 0.0;
    }
    case K22_LR_COSINE_WITH_RESTARTS: {
        if (progress >= 1.0) return 0.0;
        double v = 0.5 * (1.0 + cos(K22_LR_PI * fmod(s->num_cycles * progress, 1.0)));
        return v > 0.0 ? v : 0.0;
    }
    case K22_LR_POLYNOMIAL: {
        if (step > s->total) return s->lr_end / s->base_lr;
        if (s->total == s->warmup) return s->lr_end / s->base_lr; /* Python: ZeroDivisionError */
        double range = s->base_lr - s->lr_end;
        double pct = 1 - (double)(step - s->warmup) / (double)(s->total - s->warmup);
        return (range * pow(pct, s->power) + s->lr_end) / s->base_lr;
    }
    default:
        return 1.0;
    }
}

int64_t k22_lr_sched_steps(const k22_lr_schedule *s, int64_t opt_step)
{
    return s->resumed_steps + (opt_step - s->resumed_at) * s->world_size;
}

double k22_lr_at(const k22_lr_schedule *s, int64_t opt_step)
{
    return s->base_lr * k22_lr_lambda(s, k22_lr_sched_steps(s, opt_step));
}
