#!/usr/bin/env python3
"""PyTorch peer of msd's conditional UNet (crates/msd/src/nets/unet.rs): the identical network
(same layers, same parameter count, checked by `msd bench`), EDM preconditioning, the teacher
train step with AdamW + grad-norm clipping, Heun-18 sampling and one-step generation, timed
like `msd bench` (median of --reps after 2 warm-up runs). Prints one JSON object.

Usage: bench_unet.py --config '<UNetConfig as JSON>' --rows '[{"name": "student_one_step",
"batch": 1, "precision": "f32"}, ...]' [--reps 10] [--teacher-reps 1] [--teacher-steps 18]
[--guidance 1.25] [--threads 2] [--compile student_one_step,...]. Rows: student_one_step,
train_step, dm_iteration, teacher_heun18_guided; precision f32 or bf16 (inference: bf16 weights;
training: CPU autocast). --compile: the named rows are timed a second time with every network
wrapped in torch.compile (inductor; the warm-up runs include compilation); the row gets
"compiled_ms" (null, with "compile_error", where compilation fails on this machine).
"""
import argparse
import copy
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
    """EDM preconditioning in f32 around the network, which computes in its weights' dtype
    (f32, or bf16 for the inference rows): the twin of msd's EdmModel."""

    def __init__(self, net, sd):
        super().__init__()
        self.net, self.sd = net, sd

    def forward(self, x, sigma, labels):
        s = sigma.float().reshape(-1, 1, 1, 1)
        sd = self.sd
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        dt = self.net.conv_in.weight.dtype
        f = self.net((c_in * x).to(dt), sigma.log() / 4, labels).float()
        return c_skip * x + c_out * f


def guided(model, x, sigma, labels, scale, null):
    if scale == 1.0:
        return model(x, sigma, labels)
    b = x.shape[0]
    d = model(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([labels, torch.full_like(labels, null)]))
    cond, uncond = d[:b], d[b:]
    return uncond + (cond - uncond) * scale


def karras(n, smin=0.002, smax=80.0, rho=7.0):
    return [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(n)] + [0.0]


@torch.no_grad()
def heun(model, z, labels, steps=18, scale=1.0, null=0):
    t = karras(steps)
    x = z * t[0]
    b = z.shape[0]
    for i in range(steps):
        tc, tn = t[i], t[i + 1]
        d = (x - guided(model, x, torch.full((b,), tc), labels, scale, null)) / tc
        xn = x + d * (tn - tc)
        if tn > 0:
            d2 = (xn - guided(model, xn, torch.full((b,), tn), labels, scale, null)) / tn
            xn = x + (d + d2) * (0.5 * (tn - tc))
        x = xn
    return x


def median_ms(reps, f, warm=2):
    for _ in range(warm):
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
    ap.add_argument("--rows", required=True, help="JSON list of {name, batch, precision}")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--teacher-reps", type=int, default=1)
    ap.add_argument("--teacher-steps", type=int, default=18)
    ap.add_argument("--guidance", type=float, default=1.25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", default="", help="comma-separated row names to also time compiled")
    a = ap.parse_args()
    compile_rows = {x for x in a.compile.split(",") if x}
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = json.loads(a.config)
    cfg.pop("kind", None)
    C = cfg["num_classes"]
    shape = [cfg.get("in_channels", 1), cfg["resolution"], cfg["resolution"]]
    sd = a.sigma_data

    def fresh():
        m = Edm(UNet(cfg), sd)
        with torch.no_grad():
            m.net.conv_out.weight.normal_(0, 0.02)
            m.net.conv_out.bias.normal_(0, 0.02)
        return m

    teacher, fake, gen = fresh(), fresh(), fresh()
    params = sum(p.numel() for p in teacher.parameters())

    def lowp(m, prec):
        """A copy computing in `prec` (bf16: the network's weights in bf16)."""
        c = copy.deepcopy(m).eval()
        if prec == "bf16":
            c.net.to(torch.bfloat16)
        return c

    def autocast(prec):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=(prec == "bf16"))

    def noise(b):
        return torch.randn(b, *shape)

    def labels(b):
        return torch.arange(b) % C

    def adamw(m, **kw):
        return torch.optim.AdamW(m.parameters(), weight_decay=0.0, **kw)

    def student_one_step(b, prec, wrap=lambda m: m):
        m = wrap(lowp(gen, prec))
        z, l, s = noise(b), labels(b), torch.full((b,), 80.0)
        with torch.no_grad():
            return median_ms(a.reps, lambda: m(z * 80.0, s, l))

    def train_step(b, prec, wrap=lambda m: m):
        base = copy.deepcopy(teacher).train()
        opt = adamw(base, lr=1e-3)
        m = wrap(base)
        x, l = noise(b), labels(b)

        def step():
            sigma = (torch.randn(b) * 1.2 - 1.2).exp()
            noisy = x + torch.randn_like(x) * sigma.reshape(-1, 1, 1, 1)
            with autocast(prec):
                d = m(noisy, sigma, l)
            w = (sigma**2 + sd**2) / (sigma * sd) ** 2
            loss = (w * (d.float() - x).square().flatten(1).mean(1)).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(base.parameters(), 1.0)
            opt.step()

        return median_ms(a.reps, step)

    def dm_iteration(b, prec, wrap=lambda m: m):
        g0, f0, t0 = copy.deepcopy(gen).train(), copy.deepcopy(fake).train(), copy.deepcopy(teacher).eval()
        g_opt, f_opt = adamw(g0, lr=2e-4, betas=(0.0, 0.99)), adamw(f0, lr=2e-4, betas=(0.0, 0.99))
        g, f, t = wrap(g0), wrap(f0), wrap(t0)
        # The EMA generator that msd's DM step updates after each generator step.
        ema = copy.deepcopy(gen)
        ema_p, g_p = [p.detach() for p in ema.parameters()], [p.detach() for p in g0.parameters()]
        z, l = noise(b), labels(b)
        s80 = torch.full((b,), 80.0)

        def sig():
            return (torch.randn(b) * 1.2 - 1.2).exp()

        def it():
            with torch.no_grad():
                x = g(z * 80.0, s80, l)
            sigma = sig()
            xt = x + torch.randn_like(x) * sigma.reshape(-1, 1, 1, 1)
            with autocast(prec):
                d = f(xt, sigma, l)
            w = (sigma**2 + sd**2) / (sigma * sd) ** 2
            loss = (w.reshape(-1, 1, 1, 1) * (d.float() - x).square()).mean()
            f_opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(f0.parameters(), 1.0)
            f_opt.step()
            x = g(z * 80.0, s80, l)
            sigma = sig()
            with torch.no_grad(), autocast(prec):
                xd = x.detach()
                xt = xd + torch.randn_like(xd) * sigma.reshape(-1, 1, 1, 1)
                r = guided(t, xt, sigma, l, a.guidance, C).float()
                fk = f(xt, sigma, l).float()
                norm = (xd - r).abs().flatten(1).mean(1).reshape(-1, 1, 1, 1)
                gr = torch.nan_to_num((fk - r) / norm, 0.0, 0.0, 0.0)
            loss = 0.5 * (x - (x - gr).detach()).square().mean()
            g_opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(g0.parameters(), 1.0)
            g_opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema_p, g_p, 1.0 - 0.95)

        return median_ms(a.reps, it)

    def teacher_heun(b, prec, wrap=lambda m: m):
        m = wrap(lowp(teacher, prec))
        z, l = noise(b), labels(b)
        return median_ms(a.teacher_reps, lambda: heun(m, z, l, a.teacher_steps, a.guidance, C), warm=0)

    rows = []
    for r in json.loads(a.rows):
        name, b, prec = r["name"], r["batch"], r["precision"]
        fn = {"student_one_step": student_one_step, "train_step": train_step,
              "dm_iteration": dm_iteration}.get(name, teacher_heun if name.startswith("teacher_heun") else None)
        row = {"name": name, "batch": b, "precision": prec, "ms": fn(b, prec)}
        if name in compile_rows:
            try:
                torch._dynamo.reset()
                row["compiled_ms"] = fn(b, prec, wrap=torch.compile)
            except Exception as e:  # inductor needs a C++ toolchain; report, do not fail the run
                row["compiled_ms"] = None
                row["compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        rows.append(row)
    print(json.dumps({"params": params, "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
