"""The device check: the backend tests, the step speed against the plain PyTorch reference in
float32 and mixed precision, and the resnet18 recipe's speed, on this machine's accelerator,
in one short run.

    python benchmarks/device_check.py                  # on a GPU: at most ~8 minutes
    python benchmarks/device_check.py --tiny --out D   # a CPU smoke run in ~2 minutes (CI
                                                       # runs it: tests/test_device_check.py;
                                                       # its numbers measure nothing)

Each part runs in its own processes with a time limit, so one that fails or hangs is
reported and the others still run:
1. `pytest -m backend` (the core subset CI runs under each backend) under TensorFlow and,
   where installed, JAX and PyTorch; `--tiny` runs one mixed-float16 test under TensorFlow.
2. `benchmarks/speed.py`: the DIM(L) step on TensorFlow in float32, mixed float16 and mixed
   bfloat16 against the plain PyTorch step at the same precision (autocast; float16 with a
   GradScaler), on the GPU where there is one, at batch 64.
3. `benchmarks/speed.py`: the resnet18 recipe's step (ResNet-18 with the CIFAR stem, two
   augmentations per image) on TensorFlow in float32 and mixed float16, at batch 512.

Writes OUT/device_check.{json,md} (default `benchmarks/results/device_check/`) with the
machine (GPUs from nvidia-smi, CPU model and flags), each part's outcome and the speed tables.
TensorFlow and JAX are told to allocate GPU memory as they go, so the test processes can
share one GPU.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import speed  # noqa: E402  (benchmarks/speed.py: contenders, machine info)

DEFAULT_OUT = os.path.join(HERE, "results", "device_check")
GPU_ENV = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
SPEED_CONTENDERS = ("dim_tf", "dim_torch_ref", "dim_tf_fp16", "dim_torch_ref_fp16",
                    "dim_tf_bf16", "dim_torch_ref_bf16")
RESNET_CONTENDERS = ("resnet18_tf", "resnet18_tf_fp16")
# On a CPU float16 convolutions are emulated (minutes per ResNet-18 step): the smoke run
# keeps one float16 DIM step, so the loss-scaled path still runs.
TINY_SPEED_CONTENDERS = ("dim_tf", "dim_torch_ref", "dim_tf_fp16", "dim_torch_ref_fp16")
TINY_RESNET_CONTENDERS = ("resnet18_tf",)
TINY_TEST = ("tests/test_mixed_float16.py::"
             "test_one_mixed_float16_step_moves_the_weights_like_the_float32_step")
# The closing line of pytest -q: "3 passed, 1 skipped in 4.2s" (any order of the counts).
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)")


def _run(cmd, env, limit):
    """(return code or None when it ran past `limit` seconds, output tail, seconds)."""
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **GPU_ENV, **env},
                              capture_output=True, text=True, timeout=limit)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code = None
        output = "".join(x.decode() if isinstance(x, bytes) else (x or "")
                         for x in (e.stdout, e.stderr))
    return code, output[-4000:], time.time() - t0


def test_counts(output):
    """{"passed": n, "failed": n, ...} from pytest's closing line, and the failed tests."""
    lines = [line for line in output.splitlines() if COUNTS.search(line)]
    counts = {}
    if lines:
        for n, what in COUNTS.findall(lines[-1]):
            counts["errors" if what.startswith("error") else what] = int(n)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.M)
    return counts, failed


def backends():
    import importlib.util

    return ["tensorflow"] + [b for b in ("jax", "torch") if importlib.util.find_spec(b)]


def run_tests(tiny, limit):
    results = {}
    for backend in (["tensorflow"] if tiny else backends()):
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        # Full: 4 test processes share the GPU (memory allocated as they go).
        cmd += [TINY_TEST] if tiny else ["-m", "backend", "-n", "4"]
        code, output, seconds = _run(cmd, {"KERAS_BACKEND": backend}, limit)
        counts, failed = test_counts(output)
        results[backend] = {"exit_code": code, "timed_out": code is None, "seconds": seconds,
                            **counts, "failed_tests": failed,
                            "output_tail": output[-1500:] if code else ""}
    return results


def run_speed(contenders, batch, rounds, steps, name, out, limit):
    cmd = [sys.executable, os.path.join(HERE, "speed.py"), "--contenders", *contenders,
           "--batch", str(batch), "--rounds", str(rounds), "--steps", str(steps),
           "--warmup", "2", "--no-memory", "--out", out, "--name", name]
    code, output, seconds = _run(cmd, {}, limit)
    path = os.path.join(out, f"{name}.json")
    result = {"exit_code": code, "timed_out": code is None, "seconds": seconds,
              "command": " ".join(["python", "benchmarks/speed.py", *cmd[2:-4]])}
    if code == 0 and os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
        result["images_per_second"] = {
            k: round(v["best_images_per_second"], 1)
            for k, v in data["contenders"].items() if "best_images_per_second" in v}
        result["ratios"] = {k: v for k, v in data["ratios_of_best_rounds"].items()
                            if isinstance(v, float)}
        result["missing"] = sorted(set(contenders) - set(data["contenders"]))
    else:
        result["output_tail"] = output[-1500:]
    return result


def markdown(report):
    m = report["machine"]
    md = [f"Device check, {report['mode']} mode: `{report['command']}`", "",
          f"GPU: {'; '.join(m.get('gpus') or []) or 'none'}. CPU: {m.get('cpu_model')} "
          f"({m['cores']} cores; flags {', '.join(m.get('cpu_flags', []))}); keras "
          f"{m['keras']}, tensorflow {m['tensorflow']}, jax {m['jax']}, torch {m['torch']}. "
          f"Total {report['seconds']:.0f} s.", "",
          "| tests (pytest) | passed | failed | skipped | seconds | failed tests |",
          "|---|---|---|---|---|---|"]
    for backend, t in report["tests"].items():
        state = " (timed out)" if t["timed_out"] else ""
        md.append(f"| {backend}{state} | {t.get('passed', 0)} | {t.get('failed', 0)} | "
                  f"{t.get('skipped', 0)} | {t['seconds']:.0f} | "
                  f"{', '.join(t['failed_tests']) or '-'} |")
    for key, title in (("speed", "DIM(L) step against the PyTorch reference"),
                       ("resnet18", "resnet18 recipe step")):
        s = report[key]
        md += ["", f"{title} (`{s['command']}`): "
                   + ("timed out" if s["timed_out"] else f"exit {s['exit_code']}")
                   + f", {s['seconds']:.0f} s.", ""]
        if "images_per_second" in s:
            md += ["| contender | images/s (best round) |", "|---|---|"]
            md += [f"| {k} | {v:.1f} |" for k, v in s["images_per_second"].items()]
            if s.get("ratios"):
                md += ["", "| ratio | value |", "|---|---|"]
                md += [f"| {k} | {v:.2f} |" for k, v in s["ratios"].items()]
    return "\n".join(md) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true",
                   help="CPU smoke run: one test, one round of one step at batch 8")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--test-seconds", type=float, default=None,
                   help="time limit of each backend's tests (default 120, tiny 240)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    if args.tiny:
        tests_limit, batch, resnet_batch, rounds, steps, limit = 240, 8, 4, 1, 1, 300
    else:
        # 3 x 120 s of tests, 2 x 60 s of speed: 8 minutes at most.
        tests_limit, batch, resnet_batch, rounds, steps, limit = 120, 64, 512, 4, 10, 60
    tests_limit = args.test_seconds or tests_limit
    report = {"mode": "tiny" if args.tiny else "full",
              "command": "python benchmarks/device_check.py" + (" --tiny" if args.tiny else ""),
              "machine": speed.machine()}
    report["tests"] = run_tests(args.tiny, tests_limit)
    report["speed"] = run_speed(TINY_SPEED_CONTENDERS if args.tiny else SPEED_CONTENDERS,
                                batch, rounds, steps, "device_speed", args.out, limit)
    report["resnet18"] = run_speed(TINY_RESNET_CONTENDERS if args.tiny else RESNET_CONTENDERS,
                                   resnet_batch, rounds, max(steps // 2, 1), "device_resnet18",
                                   args.out, limit)
    report["seconds"] = time.time() - t0
    with open(os.path.join(args.out, "device_check.json"), "w") as f:
        json.dump(report, f, indent=2)
    text = markdown(report)
    with open(os.path.join(args.out, "device_check.md"), "w") as f:
        f.write(text)
    print(text)
    failed = [b for b, t in report["tests"].items() if t["exit_code"] != 0]
    failed += [k for k in ("speed", "resnet18") if report[k]["exit_code"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
