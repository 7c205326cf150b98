"""Where Keras-on-PyTorch's DIM(L) step loses to the plain PyTorch reference, op by op.

    python benchmarks/profile_torch.py            # ~2 min on an idle machine
    python benchmarks/profile_torch.py --level avx2

Both steps run in one process (KERAS_BACKEND=torch), alternately: ours is
`model.train_on_batch` (the compiled-free eager train function `fit` runs on this backend),
the reference is `speed.torch_dim_step`. Each is timed wall-clock (best of the rounds), then
profiled with `torch.profiler` for the same number of steps. The profiler's self CPU time
is summed per op group (convolution, matmul, BatchNorm, elementwise, optimizer, ...); what
the ops do not account for of the step's wall time is Python: Keras' layer calls, tracking
and dispatch, or the reference's few lines. Batch 64, 512 critic units, float32, JSD, one
view, both on all cores. Writes results/profile_torch/profile_torch[_avx2].{json,md}.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # speed.py: the PyTorch reference, the model and the machine record

# aten op -> group: (group, exact names, name prefixes); first match wins.
GROUPS = (
    ("convolution", ("convolution", "_convolution", "conv2d", "convolution_backward"),
     ("mkldnn_convolution", "_slow_conv", "thnn_conv")),
    ("matmul", ("mm", "addmm", "bmm", "matmul", "linear", "einsum", "dot", "baddbmm"), ()),
    ("batch norm", ("batch_norm", "_batch_norm_impl_index"),
     ("native_batch_norm", "_native_batch_norm", "batch_norm_")),
    ("optimizer (Adam)", ("lerp_", "addcdiv_", "addcmul_", "sqrt", "sqrt_"), ("_foreach",)),
    ("copies and casts", ("copy_", "to", "_to_copy", "clone", "contiguous", "permute",
                          "transpose", "reshape", "view", "expand", "as_strided", "t",
                          "_reshape_alias", "unsqueeze", "squeeze", "flatten", "slice",
                          "select", "detach", "alias", "stack", "cat"), ()),
    ("reductions", ("sum", "mean", "max", "min", "var", "std", "logsumexp", "argmax"), ()),
    ("allocation", ("empty", "empty_like", "zeros", "zeros_like", "ones", "ones_like",
                    "fill_", "zero_", "full", "resize_", "empty_strided"), ()),
)


def group_of(name):
    op = name.split("::")[-1]
    for group, exact, prefixes in GROUPS:
        if op in exact or op.startswith(prefixes):
            return group
    return "elementwise and other"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--level", choices=("native", "avx2"), default="native")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default=os.path.join(HERE, "results", "profile_torch"))
    args = p.parse_args(argv)
    os.environ["KERAS_BACKEND"] = "torch"
    import speed

    os.environ.update(speed.LEVELS[args.level])
    import keras
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    keras.utils.set_random_seed(0)
    model = speed.build_model(speed.DIM)
    model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5), jit_compile=False)
    x = np.random.default_rng(0).integers(0, 256, (args.batch, 32, 32, 3)).astype("uint8")
    steps = {"ours (Keras on PyTorch)": lambda: float(model.train_on_batch(x, return_dict=True)
                                                      ["loss"]),
             "PyTorch reference": speed.torch_dim_step(args.batch, speed.UNITS)}
    for f in steps.values():
        for _ in range(3):
            f()
    wall = {who: [] for who in steps}
    for r in range(args.rounds):
        for who in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            time.sleep(0.2)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                steps[who]()
            wall[who].append((time.perf_counter() - t0) / args.steps * 1000)
    groups, top = {}, {}
    for who, f in steps.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                f()
        per_group, ops = {}, []
        for e in prof.key_averages():
            if not e.key.startswith("aten::"):
                continue
            ms = e.self_cpu_time_total / 1000 / args.steps
            per_group[group_of(e.key)] = per_group.get(group_of(e.key), 0.0) + ms
            ops.append((e.key, ms, e.count // args.steps))
        groups[who] = per_group
        top[who] = sorted(ops, key=lambda o: -o[1])[:12]
    names = list(steps)
    best = {who: min(v) for who, v in wall.items()}
    out = {"machine": speed.machine(), "level": args.level,
           "environment": speed.LEVELS[args.level], "batch": args.batch,
           "rounds": args.rounds, "steps_per_round": args.steps,
           "wall_ms": {who: {"best": best[who], "rounds": v} for who, v in wall.items()},
           "self_cpu_ms_per_step": groups,
           "top_ops": {who: [{"op": o, "ms": ms, "calls": c} for o, ms, c in t]
                       for who, t in top.items()}}
    caps = ", ".join(f"{k}={v}" for k, v in speed.LEVELS[args.level].items()) or "no caps"
    m = out["machine"]
    md = [f"CPU: {m.get('cpu_model')} ({m['cores']} cores; flags "
          f"{', '.join(m.get('cpu_flags', []))}; level {args.level}: {caps}); torch "
          f"{torch.__version__}, keras {keras.__version__}. DIM(L) step, batch {args.batch}, "
          f"float32. Wall: best of {args.rounds} alternating rounds x {args.steps} steps. Op "
          f"groups: torch.profiler self CPU time per step over {args.steps} more steps (ms); "
          "Python and dispatch = wall - all ops.", "",
          f"| per step (ms) | {names[0]} | {names[1]} | difference |", "|---|---|---|---|"]
    rows = sorted({g for per in groups.values() for g in per},
                  key=lambda g: -groups[names[0]].get(g, 0.0))
    for g in rows:
        a, b = groups[names[0]].get(g, 0.0), groups[names[1]].get(g, 0.0)
        md.append(f"| {g} | {a:.1f} | {b:.1f} | {a - b:+.1f} |")
    ops_total = {who: sum(groups[who].values()) for who in names}
    rest = {who: best[who] - ops_total[who] for who in names}
    md.append(f"| Python and dispatch (wall - ops) | {rest[names[0]]:.1f} | "
              f"{rest[names[1]]:.1f} | {rest[names[0]] - rest[names[1]]:+.1f} |")
    md.append(f"| **wall** | **{best[names[0]]:.1f}** | **{best[names[1]]:.1f}** | "
              f"**{best[names[0]] - best[names[1]]:+.1f}** (ours / reference speed "
              f"{best[names[1]] / best[names[0]]:.2f}) |")
    for who in names:
        md += ["", f"Top ops, {who}: " + ", ".join(
            f"{o.split('::')[-1]} {ms:.1f} ms ({c} calls)" for o, ms, c in top[who][:8])]
    stem = "profile_torch" + ("" if args.level == "native" else "_" + args.level)
    speed.write_results(args.out, stem, out, md)


if __name__ == "__main__":
    main()
