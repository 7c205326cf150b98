"""Training and inference speed, against a PyTorch DIM(L) reference and the matmul ceiling.

    pip install -e ".[bench]"        # torch 2.13.0 (CPU build here) and psutil
    python benchmarks/speed.py       # writes benchmarks/results/speed.{json,md}

Measured in one run on the same machine: images/s of a DIM(L) training step (batch 64,
512 critic units) and of an InfoBal step (M=2), with and without XLA, and under Keras'
mixed_bfloat16 policy (also the dim_pairs recipe's step); images/s of the frozen
feature extractor; the same DIM(L) step written plainly in PyTorch (float32, and under
torch.autocast bfloat16); achieved GFLOP/s of each
step (FLOPs counted analytically, backward = 2x forward) against the fp32 matmul GFLOP/s of
both frameworks; peak RSS of training at batch 64 and 256 (fresh processes). Run it on an
idle machine: it is a benchmark, not a test. The same steps on the JAX and PyTorch
backends: `benchmarks/backend_speed.py`.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


# ---------------------------------------------------------------------------- FLOP count
def dim_step_flops(batch=64, units=512, num_views=1, infomin=False):
    """FLOPs of one training step of DIM(L) / InfoBal on 32x32 images (multiply-add = 2)."""
    conv = lambda hw, cin, cout, k=4: 2 * hw * hw * cin * cout * k * k  # noqa: E731
    enc = conv(16, 3, 64) + conv(8, 64, 128) + conv(4, 128, 256)
    enc += 2 * 4096 * 1024 + 2 * 1024 * 64
    locals_ = 64  # 8x8 local vectors, split among the views
    mlp = lambda d: 2 * (d * units + units * units + d * units)  # noqa: E731  hidden+out+shortcut
    critic = num_views * mlp(64) + locals_ * mlp(128)  # per image: globals per view, all locals
    score = 2 * batch * locals_ * units  # per image row of the (B, B, L) score tensor
    fwd = enc + critic + score
    if infomin:
        pairs = num_views * (num_views - 1) // 2
        fwd += pairs * (2 * mlp(128) + 2 * batch * units)
    return 3 * fwd * batch


def time_steps(step, steps, warmup):
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


# ------------------------------------------------------------------------------ ours (TF)
def bench_tf(batch, steps, warmup):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_infobal import InfoBal

    out = {}
    n = 200_000_000 // (2 * 1024 ** 3) + 20
    a = tf.random.normal((1024, 1024))
    b = tf.random.normal((1024, 1024))
    mm = tf.function(lambda: tf.matmul(a, b))
    sec = time_steps(lambda: mm().numpy(), n, 3)
    out["tf_matmul_gflops"] = 2 * 1024 ** 3 / sec / 1e9
    a16, b16 = tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)
    mm16 = tf.function(lambda: tf.matmul(a16, b16))
    sec = time_steps(lambda: mm16().numpy(), n, 3)
    out["tf_matmul_bf16_gflops"] = 2 * 1024 ** 3 / sec / 1e9

    x = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3)).astype("uint8")
    ds = tf.data.Dataset.from_tensors(x).repeat()
    pairs = tf.data.Dataset.from_tensors((x, x)).repeat()
    dim, infobal = dict(num_views=1, infomin_weight=0.0), dict(num_views=2, infomin_weight=1.0)
    # (name, model arguments, XLA, policy); a pair step encodes 2 x batch images.
    for name, kwargs, jit, policy in [
        ("dim_step", dim, False, "float32"),
        ("dim_step_xla", dim, True, "float32"),
        ("dim_step_bf16", dim, False, "mixed_bfloat16"),
        ("infobal_step", infobal, False, "float32"),
        ("infobal_step_xla", infobal, True, "float32"),
        ("infobal_step_bf16", infobal, False, "mixed_bfloat16"),
        ("dim_pairs_step_bf16", dict(num_views=2, infomin_weight=0.0, critic="infonce",
                                     augmented_pairs=True, score_clip=20.0),
         False, "mixed_bfloat16"),
    ]:
        keras.utils.set_random_seed(0)
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = InfoBal(critic_units=512, **kwargs)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5),
                      discriminator_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5),
                      jit_compile=jit)
        data = pairs if model.augmented_pairs else ds
        model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0)
        t0 = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        sec = (time.perf_counter() - t0) / steps
        images = batch * (2 if model.augmented_pairs else 1)
        flops = dim_step_flops(images, 512, kwargs["num_views"], kwargs["infomin_weight"] > 0)
        out[name] = {"images_per_second": images / sec, "seconds_per_step": sec,
                     "gflops_per_step": flops / 1e9, "achieved_gflops": flops / sec / 1e9,
                     "policy": policy}
    model = InfoBal(critic_units=512, **infobal)
    big = np.repeat(x, 4, axis=0)
    model.extract_features(big, layers=("conv", "fc", "R"), batch_size=256)
    t0 = time.perf_counter()
    reps = 10
    for _ in range(reps):
        model.extract_features(big, layers=("conv", "fc", "R"), batch_size=256)
    out["inference_images_per_second"] = reps * len(big) / (time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------- PyTorch reference
def torch_dim_step(batch=64, units=512):
    """The plain PyTorch DIM(L) training step (JSD critic, Adam): a function of no arguments."""
    import torch

    torch.manual_seed(0)

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU())

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.local = nn.Sequential(block(3, 64), block(64, 128))
            self.conv = block(128, 256)
            self.fc = nn.Sequential(nn.Linear(4096, 1024), nn.BatchNorm1d(1024), nn.ReLU())
            self.head = nn.Linear(1024, 64)

        def forward(self, x):
            m = self.local(x)
            return m, self.head(self.fc(self.conv(m).flatten(1)))

    class MLP(nn.Module):  # DIM's 1x1 encoder with a linear shortcut
        def __init__(self, d, u, conv):
            super().__init__()
            lin = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
            norm = nn.BatchNorm2d if conv else nn.BatchNorm1d
            self.block = nn.Sequential(lin(d, u), norm(u), nn.ReLU(), lin(u, u))
            self.short = lin(d, u)

        def forward(self, x):
            return self.block(x) + self.short(x)

    enc, g_enc, l_enc = Encoder(), MLP(64, units, False), MLP(128, units, True)
    params = [*enc.parameters(), *g_enc.parameters(), *l_enc.parameters()]
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.999))
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
    eye = torch.eye(batch)[:, :, None]

    def step():
        img = x.float() / 127.5 - 1
        m, r = enc(img)
        eg = g_enc(r)  # (B, U)
        el = l_enc(m).flatten(2)  # (B, U, L)
        s = torch.einsum("au,bul->abl", eg, el)
        e_pos = (-F.softplus(-s) * eye).sum() / (eye.sum() * s.shape[2])
        e_neg = (F.softplus(s) * (1 - eye)).sum() / ((1 - eye).sum() * s.shape[2])
        loss = -(e_pos - e_neg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    return step


def bench_torch_steps(batch):
    """The plain PyTorch DIM(L) step, float32 and under autocast bfloat16 (for the benchmarks
    that alternate contenders)."""
    import torch

    step = torch_dim_step(batch, 512)

    def step_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return step()

    return step, step_bf16


def bench_torch(batch, steps, warmup):
    import torch

    out = {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    sec = time_steps(lambda: torch.mm(a, b), 20, 3)
    out["torch_matmul_gflops"] = 2 * 1024 ** 3 / sec / 1e9
    step = torch_dim_step(batch, 512)
    sec = time_steps(step, steps, warmup)
    flops = dim_step_flops(batch, 512, 1, False)
    out["torch_dim_step"] = {"images_per_second": batch / sec, "seconds_per_step": sec,
                             "achieved_gflops": flops / sec / 1e9}

    def step_bf16():  # PyTorch's own mixed precision on CPU, the peer of our bfloat16 row
        with torch.autocast("cpu", dtype=torch.bfloat16):
            step()

    return step, step_bf16


def peak_rss(batch, steps=5):
    """Peak RSS (MiB) of a fresh process that trains DIM(L) at `batch`."""
    code = f"""
import os, resource
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras, tensorflow as tf
from keras_infobal import InfoBal
x = np.random.default_rng(0).integers(0, 256, ({batch}, 32, 32, 3)).astype("uint8")
m = InfoBal(num_views=1, infomin_weight=0.0, critic_units=512)
m.compile(optimizer="adam")
m.fit(tf.data.Dataset.from_tensors(x).repeat(), steps_per_epoch={steps}, epochs=1, verbose=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(res.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "batch": args.batch, "critic_units": 512}
    result.update(bench_tf(args.batch, args.steps, args.warmup))
    try:
        result.update(bench_torch(args.batch, args.steps, args.warmup))
    except ImportError:
        result["torch_dim_step"] = None  # pip install -e ".[bench]"
    result["peak_rss_mib"] = {str(b): peak_rss(b) for b in (64, 256)}
    ours = result["dim_step"]["images_per_second"]
    best = max(ours, result["dim_step_xla"]["images_per_second"])
    if result.get("torch_dim_step"):
        ref = result["torch_dim_step"]["images_per_second"]
        result["ratio_ours_over_torch"] = ours / ref
        result["ratio_best_ours_over_torch"] = best / ref
        result["ratio_ours_over_torch_bf16"] = (
            result["dim_step_bf16"]["images_per_second"]
            / result["torch_dim_step_bf16"]["images_per_second"])
    result["fraction_of_matmul_ceiling"] = (
        result["dim_step"]["achieved_gflops"] / result["tf_matmul_gflops"])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "speed.json"), "w") as f:
        json.dump(result, f, indent=2)
    rows = [("DIM(L) step, ours (TF)", result["dim_step"]),
            ("DIM(L) step, ours (TF, XLA)", result["dim_step_xla"]),
            ("DIM(L) step, ours (TF, mixed bfloat16)", result["dim_step_bf16"]),
            ("InfoBal step M=2, ours (TF)", result["infobal_step"]),
            ("InfoBal step M=2, ours (TF, XLA)", result["infobal_step_xla"]),
            ("InfoBal step M=2, ours (TF, mixed bfloat16)", result["infobal_step_bf16"]),
            ("dim_pairs step (2 augmentations per image, InfoNCE; images = 2 x batch), "
             "mixed bfloat16", result["dim_pairs_step_bf16"])]
    if result.get("torch_dim_step"):
        rows.append(("DIM(L) step, PyTorch reference", result["torch_dim_step"]))
        rows.append(("DIM(L) step, PyTorch reference (autocast bfloat16)",
                     result["torch_dim_step_bf16"]))
    md = ["| step (batch %d, 512 critic units) | images/s | achieved GFLOP/s |" % args.batch,
          "|---|---|---|"]
    md += [f"| {n} | {r['images_per_second']:.0f} | {r['achieved_gflops']:.1f} |"
           for n, r in rows]
    md += ["", f"fp32 matmul 1024x1024: TF {result['tf_matmul_gflops']:.1f} GFLOP/s"
           + (f", PyTorch {result['torch_matmul_gflops']:.1f} GFLOP/s"
              if result.get("torch_matmul_gflops") else ""),
           f"bfloat16 matmul 1024x1024: TF {result['tf_matmul_bf16_gflops']:.1f} GFLOP/s",
           f"Feature extraction (conv, fc, R; batch 256): "
           f"{result['inference_images_per_second']:.0f} images/s",
           f"Peak RSS training DIM(L): batch 64 {result['peak_rss_mib']['64']:.0f} MiB, "
           f"batch 256 {result['peak_rss_mib']['256']:.0f} MiB"]
    if "ratio_ours_over_torch" in result:
        md.append(f"Ours / PyTorch (DIM(L) step): {result['ratio_ours_over_torch']:.2f} "
                  f"(best of ours with/without XLA: {result['ratio_best_ours_over_torch']:.2f}); "
                  f"both in mixed bfloat16: {result['ratio_ours_over_torch_bf16']:.2f}")
    md.append(f"DIM(L) step at {100 * result['fraction_of_matmul_ceiling']:.0f}% of the TF "
              "matmul ceiling")
    md.append(f"Mixed bfloat16 / float32 (DIM(L) step): "
              f"{result['dim_step_bf16']['images_per_second'] / ours:.2f}")
    with open(os.path.join(args.out, "speed.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
