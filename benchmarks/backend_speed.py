"""Fit throughput of DIM(L) and InfoBal (M=2) on each Keras backend, in one run.

    pip install -e ".[bench,jax,torch]"
    python benchmarks/backend_speed.py      # writes benchmarks/results/backend_speed.{json,md}

One persistent worker process per backend (KERAS_BACKEND is fixed at import) builds and warms
its contenders: DIM(L) and InfoBal M=2 steps, float32 and mixed bfloat16, plus the plain
PyTorch DIM(L) reference step (`speed.bench_torch`'s model) in the torch worker. This host is
noisy (throughput swings up to 2x between 10-second windows), so the driver alternates the
contenders in short rounds (`--window` seconds each) and keeps each one's best window. Run it
on an idle machine: it is a benchmark, not a test.
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
BACKENDS = ("tensorflow", "jax", "torch")
CONTENDERS = [("dim", "float32"), ("dim", "mixed_bfloat16"),
              ("infobal", "float32"), ("infobal", "mixed_bfloat16")]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------ worker side
def worker(batch, warmup):
    """Reads contender names on stdin; times one window of each; answers images/s as JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(HERE))
    import keras
    import numpy as np

    from keras_infobal import InfoBal

    x = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3)).astype("uint8")
    steps = {}
    for kind, policy in CONTENDERS:
        keras.utils.set_random_seed(0)
        keras.mixed_precision.set_global_policy(policy)
        try:
            args = (dict(num_views=1, infomin_weight=0.0) if kind == "dim"
                    else dict(num_views=2, infomin_weight=1.0))
            model = InfoBal(critic_units=512, **args)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5),
                      discriminator_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5))
        for _ in range(warmup):
            model.train_on_batch(x)
        steps[f"{kind}_{policy}"] = (lambda m: lambda: m.train_on_batch(x))(model)
    if keras.backend.backend() == "torch":
        from speed import bench_torch_steps

        ref, ref_bf16 = bench_torch_steps(batch)
        for _ in range(warmup):
            ref(), ref_bf16()
        steps["torch_reference_float32"] = ref
        steps["torch_reference_bf16"] = ref_bf16
    print(json.dumps({"ready": sorted(steps)}), flush=True)
    for line in sys.stdin:
        name, window = line.split()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < float(window):
            steps[name]()
            n += 1
        sec = (time.perf_counter() - t0) / n
        print(json.dumps({"images_per_second": batch / sec}), flush=True)


# ------------------------------------------------------------------------------ driver side
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.batch, args.warmup)
    procs, names = {}, {}
    for backend in BACKENDS:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs[backend] = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--batch", str(args.batch),
             "--warmup", str(args.warmup)], env=env, cwd=HERE, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for backend, proc in procs.items():
        names[backend] = json.loads(proc.stdout.readline())["ready"]
    best = {}
    for _ in range(args.rounds):
        # Alternate: every contender gets one window per round; keep each one's best.
        for backend, proc in procs.items():
            for name in names[backend]:
                proc.stdin.write(f"{name} {args.window}\n")
                proc.stdin.flush()
                ips = json.loads(proc.stdout.readline())["images_per_second"]
                key = f"{backend}/{name}"
                best[key] = max(best.get(key, 0.0), ips)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    result = {"cpu": cpu_model(), "cpus": os.cpu_count(), "batch": args.batch,
              "rounds": args.rounds, "window_s": args.window, "images_per_second": best}
    ours = {k: v for k, v in best.items() if "reference" not in k}
    result["fastest"] = max(ours, key=ours.get)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "backend_speed.json"), "w") as f:
        json.dump(result, f, indent=2)
    md = [f"CPU: {result['cpu']} ({result['cpus']} cores); batch {args.batch}, 512 critic "
          f"units; best of {args.rounds} alternating {args.window:.0f} s windows", "",
          "| backend / step | images/s |", "|---|---|"]
    md += [f"| {k} | {v:.0f} |" for k, v in sorted(best.items())]
    md += ["", f"Fastest here: {result['fastest']}"]
    with open(os.path.join(args.out, "backend_speed.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
