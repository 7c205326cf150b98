"""cosmic-ray filter: skip mutations outside the named functions of the mutated module.

The core of a module (its math and update steps) is mutated; argument validation and
get_config are left to the ordinary tests. The scope is read from the session's config:

    [cosmic-ray.filters.scope]
    functions = ["MICritic._score", "get_critic"]

A sample of the in-scope mutants can be run instead of all of them (on a shared host):
MUTATION_SAMPLE=N keeps N of them, chosen by random.Random(MUTATION_SEED, default 0) over
the job list sorted by (line, operator, occurrence); the others are marked skipped
"not in the sample".

Usage: python dev/cosmic-ray/scope_filter.py CONFIG SESSION
"""

import ast
import os
import random
import sys

from cosmic_ray.config import load_config
from cosmic_ray.work_db import use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult


def function_ranges(path, names):
    """{qualified name: (first line, last line)} for the functions in `names`."""
    tree = ast.parse(open(path).read())
    ranges = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if isinstance(child, ast.FunctionDef) and name in names:
                    ranges[name] = (child.lineno, child.end_lineno)
                visit(child, name + ".")

    visit(tree, "")
    missing = set(names) - set(ranges)
    if missing:
        raise SystemExit(f"scope_filter: no function(s) {sorted(missing)} in {path}")
    return ranges


def main(config_path, session):
    config = load_config(config_path)
    module = config["module-path"]
    names = config.sub("filters", "scope")["functions"]
    ranges = list(function_ranges(module, names).values())
    kept, skipped = [], 0
    with use_db(session) as db:
        for item in list(db.pending_work_items):
            line = item.mutations[0].start_pos[0]
            if any(a <= line <= b for a, b in ranges):
                kept.append(item)
                continue
            skipped += 1
            db.set_result(item.job_id, WorkResult(output="outside the mutation scope",
                                                  worker_outcome=WorkerOutcome.SKIPPED))
        print(f"scope_filter: {len(kept)} mutants in scope, {skipped} skipped ({module})")
        sample = os.environ.get("MUTATION_SAMPLE")
        if sample and int(sample) < len(kept):
            def key(item):
                m = item.mutations[0]
                return (m.start_pos, m.operator_name, m.occurrence)

            kept.sort(key=key)
            rng = random.Random(int(os.environ.get("MUTATION_SEED", "0")))
            chosen = {id(item) for item in rng.sample(kept, int(sample))}
            for item in kept:
                if id(item) not in chosen:
                    db.set_result(item.job_id, WorkResult(
                        output="not in the sample", worker_outcome=WorkerOutcome.SKIPPED))
            print(f"scope_filter: sampled {sample} of {len(kept)} in scope "
                  f"(seed {os.environ.get('MUTATION_SEED', '0')})")


if __name__ == "__main__":
    main(*sys.argv[1:])
