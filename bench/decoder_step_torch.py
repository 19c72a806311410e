"""decoder_step_torch.py: CPU time of one decoder training step in PyTorch, the script's way
(UNet2DConditionModel, DDPM linear 0.00085..0.012 add_noise, MSE of the first 4 output channels
to the noise, backward, clip_grad_norm_ 1.0, AdamW 1e-4), on the same UNet folder and shapes as
bench_decoder_step. Prints, never asserts.
  decoder_step_torch.py UNET_DIR BATCH LATENT_SIDE STEPS"""
import sys
import time

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel


def main():
    d, B, side, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(d).train()
    sched = DDPMScheduler(beta_schedule="linear", beta_start=0.00085, beta_end=0.012)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)
    E = unet.config.encoder_hid_dim
    latents, noise = torch.randn(B, 4, side, side), torch.randn(B, 4, side, side)
    img = torch.randn(B, E)
    t = torch.tensor([(b * 397 + 11) % 1000 for b in range(B)])

    def step():
        xt = sched.add_noise(latents, noise, t)
        pred = unet(xt, t, None, added_cond_kwargs={"image_embeds": img}).sample[:, :4]
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    for _ in range(2):
        step()
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    c1, w1 = time.process_time(), time.perf_counter()
    print(f"torch {torch.__version__} batch {B} {side}x{side}: {1e3 * (c1 - c0) / steps:.3f} ms CPU/step, "
          f"{1e3 * (w1 - w0) / steps:.3f} ms wall/step ({steps} steps, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
