#!/usr/bin/env python3
"""Re-runs the bad-input cases listed in issue 15 against a built `msd` binary and prints one
markdown table row per case: exit code (or HTTP status) and the first error line. Used to make
results/serve/corpus.md; the same cases are asserted by crates/msd-cli/tests/bad_input.rs.

Usage: python3 results/serve/corpus.py target/release/msd WORKDIR > rows.md
"""
import json
import os
import socket
import struct
import subprocess
import sys
import time

MSD, WORK = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
os.makedirs(WORK, exist_ok=True)
ENV = dict(os.environ, OMP_NUM_THREADS="1")

TINY = """seed = 0
[data]
kind = "toy2d"
[model.net]
kind = "mlp"
dim = 2
num_classes = 8
width = 16
depth = 1
[teacher]
steps = 2
batch_size = 8
checkpoint_every = 2
[sampler]
steps = 4
[distill]
students = 4
iterations = 2
batch_size = 8
ttur = 1
regression_pairs_per_class = 4
regression_batch = 4
checkpoint_every = 2
kmeans_samples_per_class = 4
"""


def w(p, text):
    p = os.path.join(WORK, p)
    with open(p, "w") as f:
        f.write(text)
    return p


def run(args, timeout=120):
    t = time.time()
    try:
        r = subprocess.run([MSD] + args, capture_output=True, text=True, env=ENV, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"(no answer in {timeout} s)", time.time() - t
    err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    panicked = "panicked at" in r.stderr
    line = err[0] if err else (r.stderr.strip().splitlines() or [""])[-1]
    if panicked:
        line = "PANIC " + line
    if len(err) > 1:
        line += f" (+{len(err) - 1} more error lines)"
    return r.returncode, line, time.time() - t


def cfg(name, frm, to):
    text = TINY + to + "\n" if not frm else TINY.replace(frm, to, 1)
    return w(name, text)


rows = []


def case(what, before, args, timeout=120):
    code, line, secs = run(args, timeout)
    rows.append((what, before, f"exit {code}", line.replace("|", "\\|")[:220]))


# Fixtures: a tiny trained run with a 4-student bundle.
run_dir = os.path.join(WORK, "run")
tiny = cfg("tiny.toml", "", "")
if not os.path.exists(os.path.join(run_dir, "bundle.json")):
    subprocess.run([MSD, "train-teacher", "--config", tiny, "--out", run_dir], env=ENV, check=True,
                   capture_output=True)
    subprocess.run([MSD, "distill", "--run", run_dir], env=ENV, check=True, capture_output=True)
teacher = os.path.join(run_dir, "teacher")
bundle = os.path.join(run_dir, "bundle.json")
png = os.path.join(WORK, "x.png")


def edited_bundle(name, edit):
    b = json.load(open(bundle))
    for s in b["students"]:
        s["dir"] = os.path.join(run_dir, s["dir"]) if not os.path.isabs(s["dir"]) else s["dir"]
    edit(b)
    return w(name, json.dumps(b))


def nan_weights():
    d = os.path.join(WORK, "nan-student")
    subprocess.run(["cp", "-r", os.path.join(run_dir, "students", "1", "dm"), d], check=True)
    p = os.path.join(d, "model.safetensors")
    raw = bytearray(open(p, "rb").read())
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    for k, v in head.items():
        if k != "__metadata__" and v["dtype"] == "F32":
            a, b = v["data_offsets"]
            raw[8 + n + a:8 + n + b] = struct.pack("<f", float("nan")) * ((b - a) // 4)
    open(p, "wb").write(raw)

    def edit(b):
        b["students"][1]["dir"] = d
    return edited_bundle("nan.json", edit)


def wide(b):
    # A partition over 12 conditions for 8-class students.
    b["partition"]["num_conditions"] = 12
    owner = b["partition"]["owner"]
    b["partition"]["owner"] = owner + [owner[-1]] * 4
    b["students"][-1]["classes"] = b["students"][-1]["classes"] + [8, 9, 10, 11]


b_huge = edited_bundle("huge.json", lambda b: b.update(sigma_max=1e308))
b_neg = edited_bundle("neg.json", lambda b: b.update(sigma_max=-1.0))
b_same = edited_bundle("same.json", lambda b: b["students"][1].update(dir=b["students"][0]["dir"]))
b_wide = edited_bundle("wide.json", wide)
b_nan = nan_weights()

case("eval --batch 0", "panic (division by zero after the whole evaluation)",
     ["eval", "--teacher", teacher, "--batch", "0"])
case("sample --n 1e12", "abort on allocation", ["sample", "--teacher", teacher, "--n", "1000000000000", "--out", png])
case("sample --n 1e8", "OOM-killed at 23 GB", ["sample", "--teacher", teacher, "--n", "100000000", "--out", png])
case("config teacher.batch_size 1e12", "panic",
     ["train-teacher", "--config", cfg("c1.toml", "batch_size = 8", "batch_size = 1000000000000"), "--out", WORK + "/o1"])
case("config net.width 1e12", "panic",
     ["train-teacher", "--config", cfg("c2.toml", "width = 16", "width = 1000000000000"), "--out", WORK + "/o2"])
case("config regression_pairs_per_class 1e12", "panic",
     ["train-teacher", "--config", cfg("c3.toml", "regression_pairs_per_class = 4", "regression_pairs_per_class = 1000000000000"), "--out", WORK + "/o3"])
os.makedirs(os.path.join(WORK, "folder", "a"), exist_ok=True)
subprocess.run([MSD, "sample", "--teacher", teacher, "--n", "1", "--out", os.path.join(WORK, "folder", "a", "0.png")],
               env=ENV, capture_output=True)
case("data folder:...,size=100000", "panic",
     ["train-classifier", "--data", f"folder:{WORK}/folder,size=100000", "--out", WORK + "/clf"])
case("toy [model.net] dim = 3", "panic in the first forward",
     ["train-teacher", "--config", cfg("c4.toml", "dim = 2", "dim = 3"), "--out", WORK + "/o4"])
case("bundle sigma_max = 1e308", "panic", ["sample", "--bundle", b_huge, "--out", png])
case("bundle partition of 12 classes over 8-class students", "panic on class 11 (HTTP: class 10 served with the null label)",
     ["sample", "--bundle", b_wide, "--out", png])
case("serve --max-wait-ms 2^64-1", "accepted; a small request never answered",
     ["serve", "--bundle", bundle, "--max-wait-ms", "18446744073709551615"])
case("--threads 1000000", "accepted", ["--threads", "1000000", "serve", "--bundle", bundle])
case("sample --guidance NaN", "all-NaN samples, exit 0", ["sample", "--teacher", teacher, "--guidance", "NaN", "--out", png])
case("sample --guidance inf", "all-NaN samples, exit 0", ["sample", "--teacher", teacher, "--guidance", "inf", "--out", png])
case("bundle with NaN weights", "NaN samples, exit 0", ["sample", "--bundle", b_nan, "--out", png])
case("config sigma_data = 0", "accepted", ["train-teacher", "--config", cfg("c5.toml", "", "[model.precond]\nsigma_data = 0.0"), "--out", WORK + "/o5"])
case("config sigma_data = -1", "accepted", ["train-teacher", "--config", cfg("c6.toml", "", "[model.precond]\nsigma_data = -1.0"), "--out", WORK + "/o6"])
case("config lr = -1", "accepted", ["train-teacher", "--config", cfg("c7.toml", "", "[teacher.optimizer]\nlr = -1.0"), "--out", WORK + "/o7"])
case("config ema_decay = 2", "accepted",
     ["train-teacher", "--config", cfg("c8.toml", "checkpoint_every = 2\n[sampler]", "checkpoint_every = 2\nema_decay = 2.0\n[sampler]"), "--out", WORK + "/o8"])
case("config ema_decay = -3", "accepted",
     ["train-teacher", "--config", cfg("c9.toml", "checkpoint_every = 2\n[sampler]", "checkpoint_every = 2\nema_decay = -3.0\n[sampler]"), "--out", WORK + "/o9"])
case("config regression_weight = -1", "accepted",
     ["train-teacher", "--config", cfg("c10.toml", "ttur = 1", "ttur = 1\nregression_weight = -1.0"), "--out", WORK + "/o10"])
case("config sampler.steps = 0", "accepted",
     ["train-teacher", "--config", cfg("c11.toml", "[sampler]\nsteps = 4", "[sampler]\nsteps = 0"), "--out", WORK + "/o11"])
case("bundle sigma_max = -1", "accepted", ["serve", "--bundle", b_neg])
images = os.path.join(WORK, "images.idx")
stray = os.path.join(WORK, "stray.idx")
open(images, "wb").write(struct.pack(">IIII", 0x803, 3, 4, 4) + bytes(48))
open(stray, "wb").write(struct.pack(">II", 0x801, 3) + bytes([0, 1, 200]))
case("IDX label 200", "silently 201 classes", ["train-classifier", "--data", f"idx:{images},{stray}", "--out", WORK + "/clf2"])
case("bundle: two students on the same weights", "accepted", ["serve", "--bundle", b_same])
case("--threads 0", "silently 1", ["--threads", "0", "serve", "--bundle", bundle])
case("--class -1", "clap: unexpected argument '-1'", ["sample", "--bundle", bundle, "--class", "-1", "--out", png])
case("--n -5", "clap: unexpected argument '-5'", ["sample", "--bundle", bundle, "--n", "-5", "--out", png])
case("--seed -1", "clap: unexpected argument '-1'", ["sample", "--bundle", bundle, "--seed", "-1", "--out", png])
case("loss not finite (lr = 1e30)", "'loss is not finite at step N' names no suspect",
     ["train-teacher", "--config", cfg("c12.toml", "checkpoint_every = 2\n[sampler]", "checkpoint_every = 2\n[teacher.optimizer]\nlr = 1e30\n[sampler]"), "--out", WORK + "/o12"])
os.makedirs(os.path.join(WORK, "existing"), exist_ok=True)
case("sample --out onto an existing directory", "'image format could not be determined'",
     ["sample", "--teacher", teacher, "--out", os.path.join(WORK, "existing")])

# The documented flow: partition for 2 students, then distill student 0 (a copy of the run).
flow = os.path.join(WORK, "flow")
subprocess.run(["rm", "-rf", flow])
subprocess.run([MSD, "train-teacher", "--config", tiny, "--out", flow], env=ENV, check=True, capture_output=True)
code, line, _ = run(["partition", "--run", flow, "--students", "2"])
rows.append(("partition --students 2 (then distill)", "succeeds, then distill refuses (config says 4)", f"exit {code}",
             line or "ok"))
code, line, _ = run(["distill", "--run", flow, "--student", "0"])
rows.append(("distill --student 0 after it", "refused", f"exit {code}", line or "ok: student 0 trained"))

# Two writers on one run: hold the lock with a running train-teacher on a longer config.
slow = cfg("slow.toml", "steps = 2\nbatch_size = 8", "steps = 200000\nbatch_size = 8")
busy = os.path.join(WORK, "busy")
subprocess.run(["rm", "-rf", busy])
first = subprocess.Popen([MSD, "train-teacher", "--config", slow, "--out", busy], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(3)
for what, args in [("second train-teacher on the same --out", ["train-teacher", "--config", slow, "--out", busy]),
                   ("distill while the teacher trains", ["distill", "--run", busy]),
                   ("partition while the teacher trains", ["partition", "--run", busy])]:
    code, line, _ = run(args)
    rows.append((what, "both ran, stats.jsonl interleaved" if "second" in what else "(not in the issue)",
                 f"exit {code}", line))
first.terminate()
first.wait()

for r in rows:
    print("| " + " | ".join(str(x) for x in r) + " |")
