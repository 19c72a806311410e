"""prior_step_torch.py: CPU time of one prior training step in PyTorch, the script's way
(PriorTransformer, DDPM squaredcos_cap_v2 add_noise, MSE to x0, backward, clip_grad_norm_ 1.0,
AdamW 1e-4), on the same prior folder and batch as bench_prior_step. Prints, never asserts.
  prior_step_torch.py PRIOR_DIR BATCH STEPS"""
import sys
import time

import torch
from diffusers import DDPMScheduler, PriorTransformer


def main():
    d, B, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    prior = PriorTransformer.from_pretrained(d).train()
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="sample")
    opt = torch.optim.AdamW(prior.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)
    E, L = prior.config.embedding_dim, prior.config.num_embeddings
    te, th = torch.randn(B, E), torch.randn(B, L, E)
    ie, noise = torch.randn(B, E), torch.randn(B, E)
    mask = torch.zeros(B, L, dtype=torch.bool)
    for b in range(B):
        mask[b, : 10 + 7 * b] = True
    t = torch.tensor([(b * 397) % 1000 for b in range(B)])
    mean, std = prior.clip_mean.detach().clone(), prior.clip_std.detach().clone()

    def step():
        with torch.no_grad():
            x0 = (ie - mean) / std
            xt = sched.add_noise(x0, noise, t)
        pred = prior(xt, timestep=t, proj_embedding=te, encoder_hidden_states=th,
                     attention_mask=mask).predicted_image_embedding
        loss = torch.nn.functional.mse_loss(pred.float(), x0.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    for _ in range(2):
        step()
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    c1, w1 = time.process_time(), time.perf_counter()
    print(f"torch {torch.__version__} batch {B}: {1e3 * (c1 - c0) / steps:.3f} ms CPU/step, "
          f"{1e3 * (w1 - w0) / steps:.3f} ms wall/step ({steps} steps, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
