#!/usr/bin/env python3
"""PyTorch peer of msd's conditional UNet (crates/msd/src/nets/unet.rs): the identical network
(same layers, same parameter count, checked by `msd bench`), EDM preconditioning, the teacher
train step with AdamW + grad-norm clipping, Heun-18 sampling and one-step generation, timed
like `msd bench` (median of --reps after 2 warm-up runs). Prints one JSON object.

Usage: bench_unet.py --config '<UNetConfig as JSON>' [--batch 64] [--reps 10] [--threads 2]
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SKIP = 1.0 / math.sqrt(2.0)


def groups(c):
    cap = max(1, min(32, c // 4))
    return next(g for g in range(cap, 0, -1) if c % g == 0)


def gn(c):
    return nn.GroupNorm(groups(c), c, eps=1e-5)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb, dropout):
        super().__init__()
        self.norm0, self.conv0 = gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb, 2 * cout)
        self.norm1, self.conv1 = gn(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.dropout = dropout

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm1(h) * (scale + 1.0) + shift)
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        return (h + (self.skip(x) if self.skip is not None else x)) * SKIP


class Attention(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.norm, self.qkv, self.proj, self.heads = gn(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1), heads

    def forward(self, x, emb=None):
        b, c, h, w = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.norm(x)).reshape(b * self.heads, d, 3, h * w).unbind(2)
        att = torch.softmax(torch.bmm(q.transpose(1, 2), k) / math.sqrt(d), dim=2)
        a = torch.bmm(v, att.transpose(1, 2)).reshape(b, c, h, w)
        return (x + self.proj(a)) * SKIP


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.conv(x)


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        base, mult, R = c["base_channels"], c["channel_mult"], c["resolution"]
        emb = base * c.get("emb_mult", 4)
        self.nf = c.get("noise_freqs", 16)
        heads, drop, attn = c.get("heads", 1), c.get("dropout", 0.0), c.get("attn_resolutions", [])
        cin = c.get("in_channels", 1)
        self.noise0, self.noise1 = nn.Linear(2 * self.nf, emb), nn.Linear(emb, emb)
        self.label = nn.Embedding(c["num_classes"] + 1, emb)
        self.conv_in = nn.Conv2d(cin, base, 3, padding=1)
        self.enc, self.enc_keep = nn.ModuleList(), []
        skips, ch = [base], base
        for l, m in enumerate(mult):
            res, out = R >> l, base * m
            for _ in range(c["blocks_per_level"]):
                self.enc.append(ResBlock(ch, out, emb, drop))
                self.enc_keep.append(res not in attn)
                ch = out
                if res in attn:
                    self.enc.append(Attention(ch, heads))
                    self.enc_keep.append(True)
                skips.append(ch)
            if l + 1 < len(mult):
                self.enc.append(Down(ch))
                self.enc_keep.append(True)
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb, drop), Attention(ch, heads), ResBlock(ch, ch, emb, drop)])
        self.dec, self.dec_skip = nn.ModuleList(), []
        for l in reversed(range(len(mult))):
            res, out = R >> l, base * mult[l]
            for _ in range(c["blocks_per_level"] + 1):
                self.dec.append(ResBlock(ch + skips.pop(), out, emb, drop))
                self.dec_skip.append(True)
                ch = out
                if res in attn:
                    self.dec.append(Attention(ch, heads))
                    self.dec_skip.append(False)
            if l > 0:
                self.dec.append(Up(ch))
                self.dec_skip.append(False)
        self.norm_out = gn(ch)
        self.conv_out = nn.Conv2d(ch, cin, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        n = self.nf
        ratio = (16.0 / 0.25) ** (1.0 / (n - 1)) if n > 1 else 1.0
        self.register_buffer("freqs", torch.tensor([0.25 * ratio**i for i in range(n)], dtype=torch.float32), persistent=False)

    def forward(self, x, c_noise, labels):
        arg = c_noise.float()[:, None] * self.freqs[None, :] * (2 * math.pi)
        ff = torch.cat([arg.cos(), arg.sin()], dim=1).to(self.noise0.weight.dtype)
        emb = F.silu(self.noise1(F.silu(self.noise0(ff))) + self.label(labels))
        h = self.conv_in(x)
        skips = [h]
        for layer, keep in zip(self.enc, self.enc_keep):
            h = layer(h, emb)
            if keep:
                skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer, takes in zip(self.dec, self.dec_skip):
            if takes:
                h = torch.cat([h, skips.pop()], dim=1)
            h = layer(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class Edm(nn.Module):
    def __init__(self, net, sd):
        super().__init__()
        self.net, self.sd = net, sd

    def forward(self, x, sigma, labels):
        s = sigma.reshape(-1, 1, 1, 1)
        sd = self.sd
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        return c_skip * x + c_out * self.net(c_in * x, sigma.log() / 4, labels)


def karras(n, smin=0.002, smax=80.0, rho=7.0):
    return [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(n)] + [0.0]


@torch.no_grad()
def heun(model, z, labels, steps=18):
    t = karras(steps)
    x = z * t[0]
    b = z.shape[0]
    for i in range(steps):
        tc, tn = t[i], t[i + 1]
        d = (x - model(x, torch.full((b,), tc), labels)) / tc
        xn = x + d * (tn - tc)
        if tn > 0:
            d2 = (xn - model(xn, torch.full((b,), tn), labels)) / tn
            xn = x + (d + d2) * (0.5 * (tn - tc))
        x = xn
    return x


def median_ms(reps, f):
    for _ in range(2):
        f()
    ts = []
    for _ in range(max(1, reps)):
        s = time.perf_counter()
        f()
        ts.append((time.perf_counter() - s) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--sigma-data", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = json.loads(a.config)
    cfg.pop("kind", None)
    model = Edm(UNet(cfg), a.sigma_data)
    params = sum(p.numel() for p in model.parameters())
    shape = [cfg.get("in_channels", 1), cfg["resolution"], cfg["resolution"]]
    B = a.batch
    x1, xb = torch.randn(1, *shape), torch.randn(B, *shape)
    l1, lb = torch.zeros(1, dtype=torch.long), torch.arange(B) % cfg["num_classes"]
    s1, sb = torch.ones(1), torch.ones(B)
    model.eval()
    with torch.no_grad():
        fwd1 = median_ms(a.reps, lambda: model(x1, s1, l1))
        fwdb = median_ms(a.reps, lambda: model(xb, sb, lb))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    sd = a.sigma_data

    def step():
        sigma = (torch.randn(B) * 1.2 - 1.2).exp()
        noisy = xb + torch.randn_like(xb) * sigma.reshape(-1, 1, 1, 1)
        d = model(noisy, sigma, lb)
        w = (sigma**2 + sd**2) / (sigma * sd) ** 2
        loss = (w * (d - xb).square().flatten(1).mean(1)).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    train = median_ms(a.reps, step)
    model.eval()
    few = max(1, min(3, a.reps))
    h = median_ms(few, lambda: heun(model, xb, lb))
    with torch.no_grad():
        one = median_ms(a.reps, lambda: model(xb * 80.0, torch.full((B,), 80.0), lb))
    print(json.dumps({"params": params, "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "forward_b1_ms": fwd1, "forward_b_ms": fwdb, "train_step_b_ms": train,
                      "heun18_b_ms": h, "one_step_b_ms": one}))


if __name__ == "__main__":
    main()
