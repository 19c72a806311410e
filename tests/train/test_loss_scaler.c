/* test_loss_scaler.c: the fp16 loss scale's rule (k22_loss_scaler_update, train_core.h), step by
 * step as torch.amp.GradScaler.update with accelerate's defaults: a non-finite step halves the
 * scale and resets the growth tracker; the 2000th finite step in a row doubles it. */
#include "harness/harness.h"
#include "k22/train_core.h"

int main(void)
{
    k22_loss_scaler s = {.on = 1, .scale = K22_LOSS_SCALE_INIT, .good = 0};
    for (int i = 0; i < 3; i++) k22_loss_scaler_update(&s, 0);
    CHECK_MSG(s.scale == 8192.0 && s.good == 0, "3 overflows: scale %g, tracker %lld", s.scale, (long long)s.good);
    for (int i = 0; i < 1999; i++) k22_loss_scaler_update(&s, 1);
    CHECK_MSG(s.scale == 8192.0 && s.good == 1999, "1999 finite steps: scale %g, tracker %lld", s.scale,
              (long long)s.good);
    k22_loss_scaler_update(&s, 1);
    CHECK_MSG(s.scale == 16384.0 && s.good == 0, "the 2000th: scale %g, tracker %lld", s.scale, (long long)s.good);
    /* an overflow in the middle starts the count again */
    for (int i = 0; i < 1500; i++) k22_loss_scaler_update(&s, 1);
    k22_loss_scaler_update(&s, 0);
    for (int i = 0; i < 1999; i++) k22_loss_scaler_update(&s, 1);
    CHECK_MSG(s.scale == 8192.0 && s.good == 1999, "after an overflow at 1500: scale %g, tracker %lld", s.scale,
              (long long)s.good);
    /* 32 halvings from 65536 reach the floor under which skips count toward --max_skipped_steps */
    k22_loss_scaler f = {.on = 1, .scale = K22_LOSS_SCALE_INIT};
    int n = 0;
    while (f.scale >= K22_LOSS_SCALE_MIN) k22_loss_scaler_update(&f, 0), n++;
    CHECK_MSG(n == 33 && f.scale == K22_LOSS_SCALE_MIN / 2, "%d halvings to %g", n, f.scale);
    return k22_test_finish("test_loss_scaler");
}
