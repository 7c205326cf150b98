"""Training-step speed on every Keras backend against a plain PyTorch DIM(L) step, on a noisy host.

    pip install -e ".[bench,jax,torch]"
    python benchmarks/speed.py            # ~15 min; writes benchmarks/results/speed/speed.{json,md}
    python benchmarks/speed.py --set views  # ~5 min; DIM vs InfoBal at M = 2, 4, 8 views
    python benchmarks/speed.py --rounds 2 --steps 2 --contenders dim_tf dim_torch_ref --no-memory
    # both instruction-set levels in the same rounds (~10 min):
    python benchmarks/speed.py --levels native avx2 --name levels_speed --no-memory \
        --rounds 4 --steps 8 --contenders dim_tf dim_tf_fit dim_tf_bf16 dim2_tf infobal_tf \
        dim_jax dim_torch dim_torch_ref dim_torch_ref_bf16 matmul_tf matmul_tf_bf16 matmul_torch

What it measures, in one run on one machine:
- images/s of a DIM(L) training step (batch 64, 512 critic units, JSD) and an InfoBal step
  (M=2, lambda=1) against the DIM step of the same two-view model (lambda=0), on TensorFlow
  (eager graph and XLA), JAX and PyTorch, float32 and Keras' mixed_bfloat16; TensorFlow
  settings (inter-op threads, oneDNN off, oneDNN bf16 math); the M=8 pair (DIM and InfoBal on a 2x4 grid) on TensorFlow; the dim_pairs
  recipe's step; the frozen feature extractor; the same DIM(L) step written plainly in
  PyTorch (float32 and torch.autocast bfloat16), the reference;
- the matmul ceilings (1024^3, fp32 and bf16, TF and PyTorch) in the same rounds, and each
  step's achieved GFLOP/s (FLOPs counted analytically, backward = 2x forward);
- peak memory: the peak RSS *increase* over the first training steps (tracing and buffers)
  and over steady-state steps at batch 64 and 256, and over `extract_features` of 2,000 and
  10,000 images, each in a fresh process (the peak is reset with /proc/self/clear_refs
  after the model is built, so importing TensorFlow and building the model cannot hide it,
  as they did for the process-lifetime peak, `ru_maxrss`, that earlier versions reported).

Why rounds: on a shared host the throughput of one step swings by up to 2x from one
10-second window to the next, so one sequential pass per contender compares windows, not
code. One persistent worker process per backend builds and warms its contenders once; the
driver then asks for `--steps` timed steps of each contender in turn, rotating the order
every round, with a short pause between contenders (OpenMP / Eigen worker threads spin for a
while after work and would steal the next contender's cores). Each contender's best round is
its speed; the median and worst rounds give the spread. Every step is timed on its own
(`train_on_batch`, the compiled function `fit` runs, with its loss read back so asynchronous
dispatch cannot hide work), and every round records the host's steal time and the worker's
CPU time, so a disturbed round is visible and a host whose scheduler quantizes steps (every
step a multiple of one interval) is flagged (`quantized` in the results).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
UNITS = 512

DIM = dict(num_views=1, infomin_weight=0.0)
INFOBAL = dict(num_views=2, infomin_weight=1.0)
DIM2 = dict(num_views=2, infomin_weight=0.0)  # InfoBal M=2's architecture without InfoMin
DIM8 = dict(num_views=8, split="grid", infomin_weight=0.0)
INFOBAL8 = dict(num_views=8, split="grid", infomin_weight=1.0)
DIM_PAIRS = dict(num_views=2, infomin_weight=0.0, critic="infonce", augmented_pairs=True,
                 score_clip=20.0)
# The resnet18 recipe's step: ResNet-18 (CIFAR stem) trunk, augmented pairs, InfoNCE.
RESNET18 = dict(num_views=2, trunk="resnet18_cifar", infomin_weight=0.0, critic="infonce",
                augmented_pairs=True, score_clip=20.0)
BACKBONE_KEYS = ("num_views", "split", "trunk")  # the rest of a contender's "model" is the task's


def build_model(model):
    """The 32x32 InfoBal of a contender's `model` dict."""
    from keras_infobal import InfoBal, InfoBalBackbone

    backbone = InfoBalBackbone(**{k: v for k, v in model.items() if k in BACKBONE_KEYS},
                               image_shape=(32, 32, 3))
    return InfoBal(backbone, critic_units=UNITS,
                   **{k: v for k, v in model.items() if k not in BACKBONE_KEYS})


# Set in a worker's environment: its models use Keras' composed BatchNormalization.
COMPOSED_BN = "KERAS_INFOBAL_BENCH_COMPOSED_BN"


def _c(backend, kind, description, model=None, policy="float32", jit=None, env=None,
       group="main"):
    """A contender; `env` runs it in its own worker process with these environment variables
    (library settings read at import), `group` is the set (`--set`) it belongs to."""
    return dict(backend=backend, kind=kind, description=description, model=model,
                policy=policy, jit=jit, env=dict(env or {}), group=group)


BF16 = "mixed_bfloat16"
FP16 = "mixed_float16"  # Keras' GPU policy without fast bfloat16 (loss-scaled)
CONTENDERS = {
    # TensorFlow
    "dim_tf": _c("tensorflow", "step", "DIM(L), TF, float32", DIM, jit=False),
    "dim_tf_fit": _c("tensorflow", "fit", "DIM(L), TF, float32, `fit` on a tf.data stream",
                     DIM, jit=False),
    "dim_tf_xla": _c("tensorflow", "step", "DIM(L), TF + XLA, float32", DIM, jit=True),
    "dim_tf_bf16": _c("tensorflow", "step", "DIM(L), TF, mixed bfloat16", DIM, BF16, False),
    "dim_tf_xla_bf16": _c("tensorflow", "step", "DIM(L), TF + XLA, mixed bfloat16", DIM, BF16,
                          True),
    "dim2_tf": _c("tensorflow", "step", "DIM M=2, TF, float32", DIM2, jit=False),
    "dim2_tf_xla": _c("tensorflow", "step", "DIM M=2, TF + XLA, float32", DIM2, jit=True),
    "dim2_tf_bf16": _c("tensorflow", "step", "DIM M=2, TF, mixed bfloat16", DIM2, BF16, False),
    "dim2_tf_xla_bf16": _c("tensorflow", "step", "DIM M=2, TF + XLA, mixed bfloat16", DIM2,
                           BF16, True),
    "infobal_tf": _c("tensorflow", "step", "InfoBal M=2, TF, float32", INFOBAL, jit=False),
    "infobal_tf_xla": _c("tensorflow", "step", "InfoBal M=2, TF + XLA, float32", INFOBAL,
                         jit=True),
    "infobal_tf_bf16": _c("tensorflow", "step", "InfoBal M=2, TF, mixed bfloat16", INFOBAL,
                          BF16, False),
    "infobal_tf_xla_bf16": _c("tensorflow", "step", "InfoBal M=2, TF + XLA, mixed bfloat16",
                              INFOBAL, BF16, True),
    "dim8_tf": _c("tensorflow", "step", "DIM M=8 (grid), TF, float32", DIM8, jit=False),
    "infobal8_tf": _c("tensorflow", "step", "InfoBal M=8 (grid), TF, float32", INFOBAL8,
                      jit=False),
    "dim_pairs_tf_bf16": _c("tensorflow", "step",
                            "dim_pairs recipe (2 augmentations per image, InfoNCE), TF, "
                            "mixed bfloat16", DIM_PAIRS, BF16, False),
    "extract_tf": _c("tensorflow", "extract", "extract_features (conv, fc, R), TF, batch 256",
                     INFOBAL),
    "dim_tf_fp16": _c("tensorflow", "step", "DIM(L), TF, mixed float16", DIM, FP16, False),
    "resnet18_tf": _c("tensorflow", "step", "resnet18 recipe (ResNet-18 trunk, 2 "
                      "augmentations per image), TF, float32", RESNET18, jit=False),
    "resnet18_tf_bf16": _c("tensorflow", "step", "resnet18 recipe, TF, mixed bfloat16",
                           RESNET18, BF16, False),
    "resnet18_tf_fp16": _c("tensorflow", "step", "resnet18 recipe, TF, mixed float16",
                           RESNET18, FP16, False),
    "matmul_tf": _c("tensorflow", "matmul", "matmul 1024^3, TF, float32"),
    "matmul_tf_bf16": _c("tensorflow", "matmul", "matmul 1024^3, TF, bfloat16", policy=BF16),
    # TensorFlow settings tried for the DIM(L) step (each in its own worker process)
    "dim_tf_interop1": _c("tensorflow", "step", "DIM(L), TF, float32, 1 inter-op thread",
                          DIM, jit=False, env={"TF_NUM_INTEROP_THREADS": "1"}),
    "dim_tf_eigen": _c("tensorflow", "step", "DIM(L), TF, float32, oneDNN off (Eigen)", DIM,
                       jit=False, env={"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "dim_tf_fpmath_bf16": _c("tensorflow", "step",
                             "DIM(L), TF, float32 weights, oneDNN bf16 math "
                             "(ONEDNN_DEFAULT_FPMATH_MODE=BF16)", DIM, jit=False,
                             env={"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}),
    # With Keras' composed BatchNormalization instead of the fused op
    # (layers/batch_normalization.py): what the fused kernels save.
    "dim_tf_keras_bn": _c("tensorflow", "step", "DIM(L), TF, float32, Keras' composed "
                          "BatchNormalization", DIM, jit=False, env={COMPOSED_BN: "1"}),
    "dim_tf_bf16_keras_bn": _c("tensorflow", "step", "DIM(L), TF, mixed bfloat16, Keras' "
                               "composed BatchNormalization", DIM, BF16, False,
                               env={COMPOSED_BN: "1"}),
    "dim_tf_bf16_interop1": _c("tensorflow", "step",
                               "DIM(L), TF, mixed bfloat16, 1 inter-op thread", DIM, BF16,
                               False, env={"TF_NUM_INTEROP_THREADS": "1"}),
    # The same contender again in other worker processes (the variable changes nothing but
    # the worker): how much one process's speed differs from another's.
    **{f"dim_tf_bf16_process{_i}": _c("tensorflow", "step",
                                      f"DIM(L), TF, mixed bfloat16, worker process {_i}",
                                      DIM, BF16, False, env={"KERAS_INFOBAL_BENCH_WORKER": _i})
       for _i in "23"},
    "infobal8_tf_u128": _c("tensorflow", "step",
                           "InfoBal M=8 (grid), TF, float32, infomin_units=128",
                           dict(INFOBAL8, infomin_units=128), jit=False),
    # JAX (jit is Keras' default there)
    "dim_jax": _c("jax", "step", "DIM(L), JAX, float32", DIM, jit=True),
    "dim_jax_bf16": _c("jax", "step", "DIM(L), JAX, mixed bfloat16", DIM, BF16, True),
    "dim_jax_fit": _c("jax", "fit", "DIM(L), JAX, float32, `fit` on a tf.data stream", DIM,
                      jit=True),
    "dim2_jax": _c("jax", "step", "DIM M=2, JAX, float32", DIM2, jit=True),
    "dim2_jax_bf16": _c("jax", "step", "DIM M=2, JAX, mixed bfloat16", DIM2, BF16, True),
    "infobal_jax": _c("jax", "step", "InfoBal M=2, JAX, float32", INFOBAL, jit=True),
    "infobal_jax_bf16": _c("jax", "step", "InfoBal M=2, JAX, mixed bfloat16", INFOBAL, BF16,
                           True),
    # Keras on PyTorch (eager; torch.compile would cost minutes of compilation per run)
    "dim_torch": _c("torch", "step", "DIM(L), Keras on PyTorch, float32", DIM, jit=False),
    # The same step with Keras' composed BatchNormalization instead of the fused one
    # (layers/batch_normalization.py): what the fused kernels save.
    "dim_torch_keras_bn": _c("torch", "step", "DIM(L), Keras on PyTorch, float32, Keras' "
                             "composed BatchNormalization", DIM, jit=False,
                             env={COMPOSED_BN: "1"}),
    "dim_torch_bf16": _c("torch", "step", "DIM(L), Keras on PyTorch, mixed bfloat16", DIM,
                         BF16, False),
    "dim_torch_fit": _c("torch", "fit", "DIM(L), Keras on PyTorch, float32, `fit` on a "
                        "tf.data stream", DIM, jit=False),
    "dim2_torch": _c("torch", "step", "DIM M=2, Keras on PyTorch, float32", DIM2, jit=False),
    "infobal_torch": _c("torch", "step", "InfoBal M=2, Keras on PyTorch, float32", INFOBAL,
                        jit=False),
    "infobal_torch_bf16": _c("torch", "step", "InfoBal M=2, Keras on PyTorch, mixed bfloat16",
                             INFOBAL, BF16, False),
    # The plain PyTorch reference (no Keras), run in the torch worker
    "dim_torch_ref": _c("torch", "reference", "DIM(L), plain PyTorch reference, float32"),
    "dim_torch_ref_bf16": _c("torch", "reference",
                             "DIM(L), plain PyTorch reference, autocast bfloat16", policy=BF16),
    "dim_torch_ref_fp16": _c("torch", "reference", "DIM(L), plain PyTorch reference, autocast "
                             "float16 with a GradScaler", policy=FP16),
    "matmul_torch": _c("torch", "matmul", "matmul 1024^3, PyTorch, float32"),
    "matmul_torch_bf16": _c("torch", "matmul", "matmul 1024^3, PyTorch, bfloat16",
                            policy=BF16),
}
# The views set (`--set views`): DIM and InfoBal at M = 2, 4, 8 views (rows / grid), the
# views study's cells, in mixed bfloat16 as that study trained; and M = 8 with narrow
# (infomin_units=128) discriminators.
for _m, _split in ((2, "rows"), (4, "rows"), (4, "grid"), (8, "rows"), (8, "grid")):
    for _name, _lam in (("DIM", 0.0), ("InfoBal", 1.0)):
        CONTENDERS[f"views_{_name.lower()}_m{_m}_{_split}"] = _c(
            "tensorflow", "step", f"{_name} M={_m} {_split}, TF, mixed bfloat16",
            dict(num_views=_m, split=_split, infomin_weight=_lam), BF16, False, group="views")
for _split in ("rows", "grid"):
    CONTENDERS[f"views_infobal_m8_{_split}_u128"] = _c(
        "tensorflow", "step", f"InfoBal M=8 {_split}, TF, mixed bfloat16, infomin_units=128",
        dict(num_views=8, split=_split, infomin_weight=1.0, infomin_units=128), BF16, False,
        group="views")
SETS = sorted({c["group"] for c in CONTENDERS.values()})

# Instruction-set levels measured side by side (`--levels`): each level's contenders run in
# their own worker processes with the vector kernels of oneDNN (TensorFlow's and PyTorch's),
# ATen, MKL and XLA's CPU code generation (JAX, TF + XLA) capped, so one AVX-512 host also
# measures the kernels an AVX2-only host runs. Eigen's kernels in the TensorFlow wheel are
# compiled for one baseline ISA on every host. A contender at a level other than native is
# named "name@level".
LEVELS = {"native": {},
          "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                   "MKL_ENABLE_INSTRUCTIONS": "AVX2", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}}


def spec(key):
    """The contender `key` ("name" or "name@level") with its level's environment."""
    name, _, level = key.partition("@")
    c = dict(CONTENDERS[name], level=level or "native")
    c["env"] = {**c["env"], **LEVELS[c["level"]]}
    if level:
        c["description"] = f"{c['description']} [{level}]"
    return c


def at_levels(names, levels):
    """`names` at each of `levels`. TensorFlow's bfloat16 matmuls cannot run with oneDNN
    capped below an AVX512_BF16 CPU's level (`tests/helpers.bf16_matmul_unavailable`):
    those contenders are measured natively only; on a real AVX2 host bfloat16 is the slow
    precision anyway."""
    keys = []
    for level in levels:
        for name in names:
            c = CONTENDERS[name]
            if level != "native" and c["backend"] == "tensorflow" and c["policy"] == BF16:
                continue
            keys.append(name if level == "native" else f"{name}@{level}")
    return keys

MATMUL_FLOPS = 2 * 1024 ** 3
MATMULS_PER_STEP = 8  # one "step" of a matmul contender; keeps its steps ~10-50 ms


# ---------------------------------------------------------------------------- FLOP count
def dim_step_flops(batch=64, units=UNITS, num_views=1, infomin=False, infomin_units=None):
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
        u = infomin_units or units
        pair_mlp = 2 * (128 * u + u * u + 128 * u)
        fwd += pairs * (2 * pair_mlp + 2 * batch * u)
    return 3 * fwd * batch


def contender_flops(name, batch):
    c = spec(name)
    if c["kind"] == "matmul":
        return MATMULS_PER_STEP * MATMUL_FLOPS
    if c["kind"] == "reference":
        return dim_step_flops(batch, UNITS, 1, False)
    if c["kind"] == "extract":
        return None
    m = c["model"]
    if m.get("trunk"):
        return None  # counted for DIM's trunk only
    images = batch * (2 if m.get("augmented_pairs") else 1)
    return dim_step_flops(images, UNITS, m["num_views"], m["infomin_weight"] > 0,
                          m.get("infomin_units"))


def images_per_step(name, batch):
    c = spec(name)
    if c["kind"] == "matmul":
        return None
    if c["kind"] == "extract":
        return 16 * batch  # _keras_step extracts 16 x batch images per "step"
    return batch * (2 if (c["model"] or {}).get("augmented_pairs") else 1)


# ------------------------------------------------------------------- PyTorch reference
def torch_dim_reference(batch=64, units=UNITS):
    """The plain PyTorch DIM(L) model (JSD critic, Adam) in parts, for `torch_dim_step` and
    `profile_step.py`: (trunk, loss, optimizer), the first two functions of no arguments."""
    import torch
    import torch.nn.functional as F
    from torch import nn

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

    # On the GPU where there is one, as Keras places its tensors on every backend.
    device = torch_device()
    enc, g_enc, l_enc = (m.to(device) for m in (Encoder(), MLP(64, units, False),
                                                  MLP(128, units, True)))
    params = [*enc.parameters(), *g_enc.parameters(), *l_enc.parameters()]
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.999))
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8).to(device)
    eye = torch.eye(batch, device=device)[:, :, None]

    def trunk():
        return enc.local(x.float() / 127.5 - 1)

    def loss():
        img = x.float() / 127.5 - 1
        m, r = enc(img)
        eg = g_enc(r)  # (B, U)
        el = l_enc(m).flatten(2)  # (B, U, L)
        s = torch.einsum("au,bul->abl", eg, el).float()
        e_pos = (-F.softplus(-s) * eye).sum() / (eye.sum() * s.shape[2])
        e_neg = (F.softplus(s) * (1 - eye)).sum() / ((1 - eye).sum() * s.shape[2])
        return -(e_pos - e_neg)

    return trunk, loss, opt


def torch_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dim_step(batch=64, units=UNITS, autocast=None):
    """The plain PyTorch DIM(L) training step (JSD critic, Adam): a function of no arguments.
    `autocast` (torch.bfloat16 or torch.float16) runs the forward pass under torch.autocast;
    float16 with a GradScaler, as PyTorch's AMP recipe does."""
    import torch

    _, loss_fn, opt = torch_dim_reference(batch, units)
    device = torch_device()
    scaler = torch.amp.GradScaler(device) if autocast == torch.float16 else None

    def step():
        if autocast is None:
            loss = loss_fn()
        else:
            with torch.autocast(device, dtype=autocast):
                loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return float(loss.detach())  # read back: asynchronous GPU work cannot hide

    return step


# ------------------------------------------------------------------------------ workers
def _matmul_step(backend, bf16):
    if backend == "tensorflow":
        import tensorflow as tf

        dtype = tf.bfloat16 if bf16 else tf.float32
        a = tf.cast(tf.random.normal((1024, 1024)), dtype)
        b = tf.cast(tf.random.normal((1024, 1024)), dtype)
        mm = tf.function(lambda: tf.reduce_sum(
            tf.stack([tf.matmul(a + float(i), b)[0, 0] for i in range(MATMULS_PER_STEP)])))
        return lambda: float(mm())
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(1024, 1024).to(dtype), torch.randn(1024, 1024).to(dtype)

    def step():
        s = 0.0
        for _ in range(MATMULS_PER_STEP):
            s += float(torch.mm(a, b)[0, 0])
        return s

    return step


def _keras_step(spec, batch):
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    if os.environ.get(COMPOSED_BN):
        from keras_infobal.layers.batch_normalization import BatchNormalization

        BatchNormalization._fused = lambda self, *args: False
    keras.mixed_precision.set_global_policy(spec["policy"])
    try:
        model = build_model(spec["model"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(0)
    if spec["kind"] == "extract":
        x = rng.integers(0, 256, (16 * batch, 32, 32, 3)).astype("uint8")

        def extract():
            f = model.extract_features(x, layers=("conv", "fc", "R"), batch_size=256)
            return float(f["R"][0, 0])

        return extract
    model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5),
                  discriminator_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5),
                  jit_compile=spec["jit"])
    if spec["kind"] == "fit":
        return _fit_steps(model, rng, batch)
    x = rng.integers(0, 256, (batch, 32, 32, 3)).astype("uint8")
    # A pair batch (x1, x2) goes in as train_on_batch's x and y, which Keras hands to
    # train_step as the tuple `fit` gives it from a dataset of pairs.
    data = (x, x[::-1].copy()) if model.augmented_pairs else (x,)

    def step():
        # The public one-batch API: the same compiled train function `fit` runs.
        return float(model.train_on_batch(*data, return_dict=True)["loss"])

    return step


def _fit_steps(model, rng, batch):
    """`fit` as a user runs it: uint8 images streamed by `datasets.make_dataset` (tf.data,
    shuffled, no augmentation), so the input pipeline, the uint8 -> float rescale and
    Keras' per-step loop are all inside the timed steps. The returned function runs `n`
    steps of one `fit` call and returns their times, one batch end to the next (the first
    step, which starts the epoch iterator, is not timed)."""
    import keras

    from keras_infobal import datasets

    ds = datasets.make_dataset(rng.integers(0, 256, (64 * batch, 32, 32, 3)).astype("uint8"),
                               batch_size=batch, shuffle=True, drop_remainder=True,
                               seed=0).repeat()

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            float(logs["loss"])  # the step's result read back: no asynchronous work hides
            self.ends.append(time.perf_counter())

    def run(n):
        timer = Timer()
        timer.ends = []
        model.fit(ds, epochs=1, steps_per_epoch=n + 1, verbose=0, callbacks=[timer])
        return [b - a for a, b in zip(timer.ends, timer.ends[1:])]

    run.timed_steps = True
    return run


def _build(name, batch):
    contender = spec(name)
    bf16 = contender["policy"] == BF16
    if contender["kind"] == "matmul":
        return _matmul_step(contender["backend"], bf16)
    if contender["kind"] == "reference":
        import torch

        autocast = {BF16: torch.bfloat16, FP16: torch.float16}.get(contender["policy"])
        return torch_dim_step(batch, UNITS, autocast)
    return _keras_step(contender, batch)


def _steal_ticks():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0  # cpu steal, in USER_HZ ticks


def worker(names, batch, warmup):
    """Builds and warms `names`; then serves "name steps" requests on stdin (JSON out)."""
    steps = {}
    for name in names:
        steps[name] = _build(name, batch)
        if getattr(steps[name], "timed_steps", False):
            steps[name](warmup)
        else:
            for _ in range(warmup):
                steps[name]()
    print(json.dumps({"ready": sorted(steps)}), flush=True)
    for line in sys.stdin:
        name, n = line.split()
        times = []
        cpu0, steal0 = os.times(), _steal_ticks()
        if getattr(steps[name], "timed_steps", False):  # times its own steps (`fit`)
            times = steps[name](int(n))
        else:
            for _ in range(int(n)):
                t0 = time.perf_counter()
                steps[name]()
                times.append(time.perf_counter() - t0)
        cpu1, steal1 = os.times(), _steal_ticks()
        cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        print(json.dumps({"times": times, "cpu_seconds": cpu,
                          "steal_seconds": (steal1 - steal0) / os.sysconf("SC_CLK_TCK")}),
              flush=True)


# --------------------------------------------------------------------------- memory
MEMORY_CODE = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras
from keras_infobal import InfoBal, InfoBalBackbone
what, n = sys.argv[1], int(sys.argv[2])

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith(key))

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak RSS) to the current RSS

x = np.random.default_rng(0).integers(0, 256, (max(n, 256), 32, 32, 3)).astype("uint8")
m = InfoBal(InfoBalBackbone(num_views=1, image_shape=(32, 32, 3)), infomin_weight=0.0,
            critic_units=512)
if what == "train":
    m.compile(optimizer="adam")
    batch = x[:n]
    # From the built model: the first steps trace the step and allocate its buffers.
    reset_peak(); first_base = status("VmRSS")
    for _ in range(3):
        m.train_on_batch(batch)
    first = {"first_steps_increase_mib": status("VmHWM") - first_base}
    # Steady state: later steps reuse those buffers.
    reset_peak(); base = status("VmRSS")
    for _ in range(5):
        m.train_on_batch(batch)
else:
    first = {}
    m.extract_features(x[:256], layers=("conv", "fc", "R"), batch_size=256)
    reset_peak(); base = status("VmRSS")
    f = m.extract_features(x[:n], layers=("conv", "fc", "R"), batch_size=256)
    out_mib = sum(v.nbytes for v in f.values()) / 2 ** 20
print(json.dumps({"rss_before_mib": base, "peak_mib": status("VmHWM"),
                  "increase_mib": status("VmHWM") - base, **first,
                  **({"output_mib": out_mib} if what == "extract" else {})}))
"""


def memory():
    """Peak RSS increase over steady-state training / extraction, in fresh processes."""
    out = {}
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    for what, sizes in (("train", (64, 256)), ("extract", (2000, 10000))):
        for n in sizes:
            res = subprocess.run([sys.executable, "-c", MEMORY_CODE, what, str(n)], env=env,
                                 capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            out[f"{what}_{n}"] = r
    t64, t256 = (out["train_64"]["first_steps_increase_mib"],
                 out["train_256"]["first_steps_increase_mib"])
    out["train_mib_per_image"] = (t256 - t64) / (256 - 64)
    e2, e10 = out["extract_2000"]["increase_mib"], out["extract_10000"]["increase_mib"]
    out["extract_mib_per_image"] = (e10 - e2) / 8000
    return out


# --------------------------------------------------------------------------- driver
def write_results(folder, stem, out, md):
    """FOLDER/STEM.json (the measurements) and FOLDER/STEM.md (the table, `md`'s lines),
    printed too: the record every benchmark here leaves."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, stem + ".json"), "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(folder, stem + ".md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


def machine():
    info = {"cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        fields = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        # Hypervisors often show a bare "AMD EPYC": the family and model tell the core
        # generation apart (AMD family 25 is Zen 3/4, 26 is Zen 5), which changes the speed
        # of the same step about twofold.
        info["cpu_model"] = (f"{fields['model name']} (family {fields.get('cpu family', '?')}, "
                             f"model {fields.get('model', '?')})")
        flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(
            ("avx512_bf16", "amx", "avx512f", "avx2", "hypervisor")))
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor() or "unknown"
    try:  # the accelerator, where there is one (benchmarks/device_check.py)
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
        info["gpus"] = gpus.splitlines() if gpus else []
    except (OSError, subprocess.SubprocessError):
        info["gpus"] = []
    for module in ("keras", "tensorflow", "jax", "torch", "numpy"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info


def best_of_rounds(fns, rounds, calls, pause=0.1):
    """{name: seconds per call}: each of `fns` (name -> no-argument callable) timed for `calls`
    calls per round, the contenders alternating, best of `rounds` rounds; the short pause
    keeps one contender's spinning threads out of the next one's turn."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            time.sleep(pause)
            t = time.perf_counter()
            for _ in range(calls):
                f()
            best[k] = min(best[k], (time.perf_counter() - t) / calls)
    return best


def quantization(times):
    """Whether every step lasted (within 3%) a whole multiple of the shortest one, with some
    steps at 2x or more: the signature of a host that hands out CPU in fixed slices."""
    q = min(times)
    ratios = [t / q for t in times]
    on_grid = all(abs(r - round(r)) < 0.03 * r for r in ratios)
    return {"quantum_seconds": q, "quantized": bool(on_grid and max(ratios) >= 1.9)}


def start_workers(names, args):
    by_worker = {}  # one process per backend and environment
    for name in names:
        c = spec(name)
        key = (c["backend"], tuple(sorted(c["env"].items())))
        by_worker.setdefault(key, []).append(name)
    procs = {}
    for (backend, settings), group in by_worker.items():
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=backend, **dict(settings))
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", *group, "--batch",
               str(args.batch), "--warmup", str(args.warmup)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env)
        line = proc.stdout.readline()
        if not line:
            print(f"skipped {group}: the {backend} worker failed to start (see above)",
                  file=sys.stderr)
            continue
        for name in json.loads(line)["ready"]:
            procs[name] = proc
    return procs


def run(args):
    procs = start_workers(args.contenders, args)
    names = [n for n in args.contenders if n in procs]
    rec = {n: {"rounds_per_second": [], "step_seconds": [], "cpu_cores_used": [],
               "steal_seconds": []} for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            time.sleep(args.settle)
            proc = procs[name]
            proc.stdin.write(f"{name} {args.steps}\n")
            proc.stdin.flush()
            ans = json.loads(proc.stdout.readline())
            wall = sum(ans["times"])
            rec[name]["rounds_per_second"].append(len(ans["times"]) / wall)
            rec[name]["step_seconds"].extend(ans["times"])
            rec[name]["cpu_cores_used"].append(ans["cpu_seconds"] / wall)
            rec[name]["steal_seconds"].append(ans["steal_seconds"])
    for proc in set(procs.values()):
        proc.stdin.close()
        proc.wait()
    out = {"machine": machine(), "levels": args.levels,
           "level_environments": {k: LEVELS[k] for k in args.levels},
           "batch": args.batch, "critic_units": UNITS,
           "rounds": args.rounds, "steps_per_round": args.steps, "settle_seconds": args.settle,
           "contenders": {}}
    for name in names:
        r = rec[name]
        best, med, worst = (max(r["rounds_per_second"]),
                            statistics.median(r["rounds_per_second"]),
                            min(r["rounds_per_second"]))
        flops, imgs = contender_flops(name, args.batch), images_per_step(name, args.batch)
        contender = spec(name)
        c = {**{k: contender[k] for k in ("description", "kind", "backend", "level")},
             "best_steps_per_second": best,
             "median_steps_per_second": med, "worst_steps_per_second": worst,
             "spread_best_over_worst": best / worst, **r, **quantization(r["step_seconds"])}
        if imgs:
            c.update(best_images_per_second=best * imgs, median_images_per_second=med * imgs,
                     worst_images_per_second=worst * imgs)
        if flops:
            c["best_gflops"] = best * flops / 1e9
        out["contenders"][name] = c
    out["ratios_of_best_rounds"] = ratios(out)
    return out


RATIOS = {
    "ours / PyTorch reference, float32 (TF)": ("dim_tf", "dim_torch_ref"),
    "ours / PyTorch reference, float32 (TF + XLA)": ("dim_tf_xla", "dim_torch_ref"),
    "ours `fit` / PyTorch reference, float32 (TF)": ("dim_tf_fit", "dim_torch_ref"),
    "ours `fit` / PyTorch reference, float32 (JAX)": ("dim_jax_fit", "dim_torch_ref"),
    "ours `fit` / PyTorch reference, float32 (Keras on PyTorch)": ("dim_torch_fit",
                                                                    "dim_torch_ref"),
    "ours `fit` / our step, float32 (TF)": ("dim_tf_fit", "dim_tf"),
    "ours / PyTorch reference, float32 (JAX)": ("dim_jax", "dim_torch_ref"),
    "ours / PyTorch reference, float32 (Keras on PyTorch)": ("dim_torch", "dim_torch_ref"),
    "ours with Keras' composed BatchNormalization / PyTorch reference, float32 (Keras on "
    "PyTorch)": ("dim_torch_keras_bn", "dim_torch_ref"),
    "ours with Keras' composed BatchNormalization / PyTorch reference, float32 (TF)": (
        "dim_tf_keras_bn", "dim_torch_ref"),
    "ours with Keras' composed BatchNormalization / PyTorch reference, bfloat16 (TF)": (
        "dim_tf_bf16_keras_bn", "dim_torch_ref_bf16"),
    "ours / PyTorch reference, float32 (TF, 1 inter-op thread)": ("dim_tf_interop1",
                                                                  "dim_torch_ref"),
    "ours / PyTorch reference, float32 (TF, oneDNN off)": ("dim_tf_eigen", "dim_torch_ref"),
    "ours with oneDNN bf16 math / PyTorch reference, float32": ("dim_tf_fpmath_bf16",
                                                                "dim_torch_ref"),
    "ours with oneDNN bf16 math / PyTorch reference, autocast bfloat16": (
        "dim_tf_fpmath_bf16", "dim_torch_ref_bf16"),
    "ours / PyTorch reference, bfloat16 (TF)": ("dim_tf_bf16", "dim_torch_ref_bf16"),
    "ours / PyTorch reference, float16 (TF)": ("dim_tf_fp16", "dim_torch_ref_fp16"),
    "ours / PyTorch reference, bfloat16 (TF + XLA)": ("dim_tf_xla_bf16", "dim_torch_ref_bf16"),
    "ours / PyTorch reference, bfloat16 (JAX)": ("dim_jax_bf16", "dim_torch_ref_bf16"),
    "ours / PyTorch reference, bfloat16 (Keras on PyTorch)": ("dim_torch_bf16",
                                                               "dim_torch_ref_bf16"),
}
# Step time of InfoBal over the DIM step of the same architecture (same M, lambda = 0) and
# backend: what the InfoMin term costs (targets: <= 1.1 at M=2, <= 1.3 at M=8).
COST = {
    "InfoBal / DIM step time, M=2, TF float32": ("dim2_tf", "infobal_tf"),
    "InfoBal / DIM step time, M=2, TF + XLA float32": ("dim2_tf_xla", "infobal_tf_xla"),
    "InfoBal / DIM step time, M=2, TF bfloat16": ("dim2_tf_bf16", "infobal_tf_bf16"),
    "InfoBal / DIM step time, M=2, TF + XLA bfloat16": ("dim2_tf_xla_bf16",
                                                        "infobal_tf_xla_bf16"),
    "InfoBal / DIM step time, M=2, JAX float32": ("dim2_jax", "infobal_jax"),
    "InfoBal / DIM step time, M=2, JAX bfloat16": ("dim2_jax_bf16", "infobal_jax_bf16"),
    "InfoBal / DIM step time, M=2, Keras on PyTorch float32": ("dim2_torch", "infobal_torch"),
    # Two views against one (both lambda = 0): what the multi-view InfoMax side costs.
    "DIM M=2 / DIM(L) M=1 step time, TF float32": ("dim_tf", "dim2_tf"),
    "DIM M=2 / DIM(L) M=1 step time, TF + XLA float32": ("dim_tf_xla", "dim2_tf_xla"),
    "DIM M=2 / DIM(L) M=1 step time, JAX float32": ("dim_jax", "dim2_jax"),
    "InfoBal / DIM step time, M=8, TF float32": ("dim8_tf", "infobal8_tf"),
    "InfoBal / DIM step time, M=8, TF float32, infomin_units=128": ("dim8_tf",
                                                                    "infobal8_tf_u128"),
}
for _m, _split in ((2, "rows"), (4, "rows"), (4, "grid"), (8, "rows"), (8, "grid")):
    COST[f"InfoBal / DIM step time, M={_m} {_split}, TF bfloat16"] = (
        f"views_dim_m{_m}_{_split}", f"views_infobal_m{_m}_{_split}")
for _split in ("rows", "grid"):
    COST[f"InfoBal / DIM step time, M=8 {_split}, TF bfloat16, infomin_units=128"] = (
        f"views_dim_m8_{_split}", f"views_infobal_m8_{_split}_u128")


# The share of the float32 matmul ceiling (same backend, same rounds, same level) a
# float32 step reaches (target: >= 80%).
CEILING = {
    "DIM(L) step / matmul ceiling, float32 (TF)": ("dim_tf", "matmul_tf"),
    "DIM(L) step / matmul ceiling, float32 (plain PyTorch reference)": ("dim_torch_ref",
                                                                        "matmul_torch"),
}


def ratios(out):
    """Each ratio at each level measured (labelled "[level]" below native)."""
    best = {k: v["best_steps_per_second"] for k, v in out["contenders"].items()}
    gflops = {k: v.get("best_gflops") for k, v in out["contenders"].items()}
    res = {}
    for level in out.get("levels", ["native"]):
        at = "" if level == "native" else f"@{level}"
        tag = "" if level == "native" else f" [{level}]"
        for k, (a, b) in {**RATIOS, **COST}.items():
            if a + at in best and b + at in best:
                res[k + tag] = best[a + at] / best[b + at]
        for k, (a, b) in CEILING.items():
            if gflops.get(a + at) and gflops.get(b + at):
                res[k + tag] = gflops[a + at] / gflops[b + at]
        steps = {k: v for k, v in best.items() if k.startswith("dim_") and "_ref" not in k
                 and "pairs" not in k and spec(k)["level"] == level}
        for policy in ("float32", BF16):
            ours = {k: v for k, v in steps.items()
                    if spec(k)["policy"] == policy and spec(k)["kind"] == "step"
                    # bf16 math is not a float32 step
                    and "ONEDNN_DEFAULT_FPMATH_MODE" not in spec(k)["env"]
                    and COMPOSED_BN not in spec(k)["env"]}
            if ours:
                res[f"fastest DIM(L) step, {policy}{tag}"] = max(ours, key=ours.get)
    return res


def markdown(out):
    m = out["machine"]
    md = [f"CPU: {m.get('cpu_model')} ({m['cores']} cores; flags {', '.join(m.get('cpu_flags', []))})"
          f"; python {m['python']}, keras {m['keras']}, tensorflow {m['tensorflow']}, jax "
          f"{m['jax']}, torch {m['torch']}. {out['rounds']} alternating rounds x "
          f"{out['steps_per_round']} timed steps per contender, batch {out['batch']}, "
          f"{out['critic_units']} critic units; best round (median, worst). GPU: "
          f"{'; '.join(m.get('gpus') or []) or 'none'}.",
          "Levels: " + "; ".join(
              f"{k} ({', '.join(f'{a}={b}' for a, b in v.items()) or 'no caps'})"
              for k, v in out.get("level_environments", {"native": {}}).items()) + ".", "",
          "| contender | images/s best (median, worst) | GFLOP/s (best) | cores used | "
          "steal s/round | quantized |", "|---|---|---|---|---|---|"]
    for c in out["contenders"].values():
        if "best_images_per_second" in c:
            speed = (f"{c['best_images_per_second']:.0f} ({c['median_images_per_second']:.0f},"
                     f" {c['worst_images_per_second']:.0f})")
        else:
            speed = "-"
        gf = f"{c['best_gflops']:.0f}" if c.get("best_gflops") else "-"
        md.append(f"| {c['description']} | {speed} | {gf} | "
                  f"{statistics.median(c['cpu_cores_used']):.2f} | "
                  f"{max(c['steal_seconds']):.2f} | {'yes' if c['quantized'] else 'no'} |")
    md += ["", "| ratio (of best rounds) | value |", "|---|---|"]
    for k, v in out["ratios_of_best_rounds"].items():
        md.append(f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |")
    mem = out.get("memory")
    if mem:
        md += ["", "Peak RSS increase (fresh process each; the peak is reset with "
                   "/proc/self/clear_refs): training DIM(L), over the first 3 steps from the "
                   f"built model, batch 64 {mem['train_64']['first_steps_increase_mib']:.0f} "
                   f"MiB, batch 256 {mem['train_256']['first_steps_increase_mib']:.0f} MiB "
                   f"({mem['train_mib_per_image']:.2f} MiB per image of batch); over 5 "
                   f"steady-state steps {mem['train_64']['increase_mib']:.0f} and "
                   f"{mem['train_256']['increase_mib']:.0f} MiB; extract_features 2,000 images "
               f"{mem['extract_2000']['increase_mib']:.0f} MiB, 10,000 images "
               f"{mem['extract_10000']['increase_mib']:.0f} MiB (outputs "
               f"{mem['extract_10000']['output_mib']:.0f} MiB; "
               f"{1024 * mem['extract_mib_per_image']:.1f} KiB per image). Process RSS before "
               f"training: {mem['train_64']['rss_before_mib']:.0f} MiB."]
    return "\n".join(md) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", choices=SETS, default="main",
                   help="main: every backend and setting (results speed.*); views: DIM and "
                        "InfoBal at M = 2, 4, 8 views (results views_speed.*)")
    p.add_argument("--contenders", nargs="+", choices=list(CONTENDERS),
                   help="only these (default: the --set's contenders)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=8, help="timed steps per contender per round")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--settle", type=float, default=0.3,
                   help="seconds of pause before each contender's turn")
    p.add_argument("--levels", nargs="+", choices=list(LEVELS), default=["native"],
                   help="instruction-set levels, measured in the same alternating rounds "
                        "(avx2: oneDNN, ATen and MKL capped at AVX2)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--out", help="results folder (default: benchmarks/results/NAME)")
    p.add_argument("--name", help="results file stem (default: speed, or <set>_speed)")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        sys.path.insert(0, os.path.dirname(HERE))
        return worker(args.worker, args.batch, args.warmup)
    if not args.contenders:
        args.contenders = [n for n, c in CONTENDERS.items() if c["group"] == args.set]
    args.contenders = at_levels(args.contenders, args.levels)
    stem = args.name or ("speed" if args.set == "main" else f"{args.set}_speed")
    args.out = args.out or os.path.join(RESULTS, stem)
    out = run(args)
    out["set"] = args.set
    if not args.no_memory and args.set == "main":
        out["memory"] = memory()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, stem + ".json"), "w") as f:
        json.dump(out, f, indent=2)
    md = markdown(out)
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
