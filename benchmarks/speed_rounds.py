"""Training-step speed on a shared, noisy host: contenders alternate in short rounds.

    pip install -e ".[bench]"              # torch (the PyTorch reference) and psutil
    python benchmarks/speed_rounds.py      # writes benchmarks/results/speed_rounds.{json,md}
    python benchmarks/speed_rounds.py --contenders dim_tf dim_torch_ref --rounds 3 --steps 5

Why rounds: on a shared 2-core host the throughput of the same step swings by up to 2x from
one 10-second window to the next, so one sequential pass per contender compares windows,
not code. Here every contender is a persistent worker process (its own Keras backend, model
built and warmed up once); the coordinator asks each in turn, in a rotating order, to time
`--steps` steps, for `--rounds` rounds. Each contender's best round is its speed (the least
disturbed window); the median and worst rounds give the spread. Ratios are of best rounds.

Timing: `time.perf_counter()` around each `train_on_batch` call (Keras' compiled train
function, the one `fit` runs), after its loss is materialized (`float(loss)`), so
asynchronous dispatch cannot hide work; per-step
times are kept too, which shows quantization by the host's scheduler (a run where every step
lasted a multiple of the same interval).

The results file records the CPU model, core count, flags that matter (avx512_bf16,
amx), and the versions of Python, Keras, TensorFlow, JAX and PyTorch.
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

# name: (backend, model kwargs, mixed precision, description)
DIM = dict(num_views=1, infomin_weight=0.0)
INFOBAL = dict(num_views=2, infomin_weight=1.0)
INFOBAL8 = dict(num_views=8, split="grid", infomin_weight=1.0)
DIM8 = dict(num_views=8, split="grid", infomin_weight=0.0)
CONTENDERS = {
    "dim_tf": ("tensorflow", DIM, False, "DIM(L), TensorFlow, float32"),
    "dim_tf_bf16": ("tensorflow", DIM, True, "DIM(L), TensorFlow, mixed bfloat16"),
    "infobal_tf": ("tensorflow", INFOBAL, False, "InfoBal M=2, TensorFlow, float32"),
    "infobal_tf_bf16": ("tensorflow", INFOBAL, True, "InfoBal M=2, TensorFlow, mixed bfloat16"),
    "dim8_tf": ("tensorflow", DIM8, False, "DIM M=8 grid, TensorFlow, float32"),
    "infobal8_tf": ("tensorflow", INFOBAL8, False, "InfoBal M=8 grid, TensorFlow, float32"),
    "dim_jax": ("jax", DIM, False, "DIM(L), JAX, float32"),
    "dim_jax_bf16": ("jax", DIM, True, "DIM(L), JAX, mixed bfloat16"),
    "infobal_jax": ("jax", INFOBAL, False, "InfoBal M=2, JAX, float32"),
    "dim_torch": ("torch", DIM, False, "DIM(L), Keras on PyTorch, float32"),
    "infobal_torch": ("torch", INFOBAL, False, "InfoBal M=2, Keras on PyTorch, float32"),
    "dim_torch_ref": ("reference", None, False, "DIM(L), plain PyTorch reference, float32"),
    "dim_torch_ref_bf16": ("reference", None, True,
                           "DIM(L), plain PyTorch reference, autocast bfloat16"),
}
DEFAULT = ["dim_tf", "dim_tf_bf16", "infobal_tf", "infobal_tf_bf16", "dim8_tf", "infobal8_tf",
           "dim_torch_ref", "dim_torch_ref_bf16"]


# ------------------------------------------------------------------------------ workers
def _keras_worker(kwargs, bf16, batch, units):
    import keras
    import numpy as np

    from keras_infobal import InfoBal

    keras.utils.set_random_seed(0)
    if bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = InfoBal(critic_units=units, **kwargs)
    keras.mixed_precision.set_global_policy("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5),
                  discriminator_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5))
    x = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3)).astype("uint8")

    def step():
        # The public one-batch API; it runs the same compiled train function as `fit`.
        logs = model.train_on_batch(x, return_dict=True)
        return float(logs["loss"])

    return step


def _torch_reference(bf16, batch, units):
    sys.path.insert(0, HERE)
    import torch

    from speed import torch_dim_step  # the plain PyTorch DIM(L) step (speed.py)

    step = torch_dim_step(batch, units)
    if not bf16:
        return step

    def step_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return step()

    return step_bf16


def worker(name, batch, units, warmup):
    """Serves timing requests on stdin: a number of steps in, seconds per step out (JSON)."""
    backend, kwargs, bf16, _ = CONTENDERS[name]
    step = (_torch_reference(bf16, batch, units) if backend == "reference"
            else _keras_worker(kwargs, bf16, batch, units))
    for _ in range(warmup):
        step()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        n = int(line)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        print(json.dumps({"times": times}), flush=True)


# --------------------------------------------------------------------------- coordinator
def machine():
    info = {"cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                                 if line.startswith("model name"))
        flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx512_bf16", "amx",
                                                                       "avx512f", "avx2")))
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor() or "unknown"
    for module in ("keras", "tensorflow", "jax", "torch", "numpy"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info


def start(name, args):
    backend = CONTENDERS[name][0]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND="torch" if backend == "reference" else backend)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--batch",
           str(args.batch), "--units", str(args.units), "--warmup", str(args.warmup)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"contender {name} failed to start (see its stderr above)")
    return proc


def ask(proc, steps):
    proc.stdin.write(f"{steps}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())["times"]


def run(args):
    procs = {}
    for name in args.contenders:
        try:
            procs[name] = start(name, args)
        except RuntimeError as e:  # e.g. a backend that is not installed
            print(f"skipped: {e}", file=sys.stderr)
    rounds = {name: [] for name in procs}
    steps = {name: [] for name in procs}
    names = list(procs)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            times = ask(procs[name], args.steps)
            steps[name].extend(times)
            rounds[name].append(args.batch * len(times) / sum(times))
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    out = {"machine": machine(), "batch": args.batch, "critic_units": args.units,
           "rounds": args.rounds, "steps_per_round": args.steps, "contenders": {}}
    for name in names:
        ips = rounds[name]
        out["contenders"][name] = {
            "description": CONTENDERS[name][3], "best_images_per_second": max(ips),
            "median_images_per_second": statistics.median(ips),
            "worst_images_per_second": min(ips), "rounds_images_per_second": ips,
            "step_seconds": steps[name]}
    return out


def ratios(out):
    c = {k: v["best_images_per_second"] for k, v in out["contenders"].items()}
    pairs = {"dim_tf / dim_torch_ref": ("dim_tf", "dim_torch_ref"),
             "dim_tf_bf16 / dim_torch_ref_bf16": ("dim_tf_bf16", "dim_torch_ref_bf16"),
             "dim_jax / dim_torch_ref": ("dim_jax", "dim_torch_ref"),
             "dim_torch / dim_torch_ref": ("dim_torch", "dim_torch_ref"),
             "infobal_tf step / dim_tf step (M=2)": ("dim_tf", "infobal_tf"),
             "infobal8_tf step / dim8_tf step (M=8)": ("dim8_tf", "infobal8_tf")}
    return {k: c[a] / c[b] for k, (a, b) in pairs.items() if a in c and b in c}


def write(out, directory):
    out["ratios_of_best_rounds"] = ratios(out)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "speed_rounds.json"), "w") as f:
        json.dump(out, f, indent=2)
    m = out["machine"]
    md = [f"CPU: {m.get('cpu_model')} ({m['cores']} cores; {', '.join(m.get('cpu_flags', []))})"
          f"; keras {m['keras']}, tensorflow {m['tensorflow']}, jax {m['jax']}, torch "
          f"{m['torch']}. {out['rounds']} rounds x {out['steps_per_round']} steps per "
          f"contender, alternating; batch {out['batch']}, {out['critic_units']} critic units.",
          "", "| contender | best round (images/s) | median | worst |", "|---|---|---|---|"]
    for c in out["contenders"].values():
        md.append(f"| {c['description']} | {c['best_images_per_second']:.0f} | "
                  f"{c['median_images_per_second']:.0f} | {c['worst_images_per_second']:.0f} |")
    md += [""] + [f"- {k}: {v:.2f}" for k, v in out["ratios_of_best_rounds"].items()]
    with open(os.path.join(directory, "speed_rounds.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    return "\n".join(md)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--contenders", nargs="+", default=DEFAULT, choices=sorted(CONTENDERS))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--units", type=int, default=512)
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.batch, args.units, args.warmup)
    print(write(run(args), args.out))


if __name__ == "__main__":
    main()
