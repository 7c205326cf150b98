"""Re-runs a module's test selection against each surviving mutant of a cosmic-ray session.

After tests are added for a session's survivors, this applies each survivor's stored diff to
a scratch copy of the tree (`patch -p1`), runs the session's test command there with plain
pytest (not the fork server), and reports which survivors the tests now kill. The worktree
is never modified.

Usage: python dev/cosmic-ray/recheck.py dev/cosmic-ray/M.toml SESSION.sqlite [--out FILE]
"""

import argparse
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from survivors import changed_lines  # noqa: E402


def test_command(config_path):
    with open(config_path, "rb") as f:
        command = tomllib.load(f)["cosmic-ray"]["test-command"]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "dev/cosmic-ray/run_tests.py"], command
    return [sys.executable, "-m", "pytest", *argv[2:]]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("session")
    p.add_argument("--out")
    args = p.parse_args()
    cmd = test_command(args.config)
    db = sqlite3.connect(args.session)
    survivors = db.execute(
        "select s.start_pos_row, s.operator_name, s.occurrence, r.diff from work_results r "
        "join mutation_specs s using (job_id) where r.test_outcome = 'SURVIVED' "
        "order by s.start_pos_row, s.operator_name, s.occurrence").fetchall()
    lines, killed = [], 0
    with tempfile.TemporaryDirectory() as scratch:
        for line, op, occ, diff in survivors:
            tree = os.path.join(scratch, "tree")
            shutil.rmtree(tree, ignore_errors=True)
            os.makedirs(tree)
            for name in ("keras_infobal", "tests", "setup.cfg", "pyproject.toml", "dev"):
                src = os.path.join(ROOT, name)
                (shutil.copytree if os.path.isdir(src) else shutil.copy)(
                    src, os.path.join(tree, name))
            patch = diff.split("--- mutation diff ---\n", 1)[-1]
            applied = subprocess.run(["patch", "-p1", "--quiet"], cwd=tree, input=patch,
                                     text=True, capture_output=True)
            if applied.returncode:
                verdict = "patch failed (module changed since the run)"
            else:
                env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="3",
                           PYTHONDONTWRITEBYTECODE="1")
                res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
                verdict = "killed" if res.returncode else "survived"
                killed += res.returncode != 0
            old, new = changed_lines(diff)
            lines.append(f"line {line} {op.split('/')[-1]}#{occ}: {old}  ->  {new}: {verdict}")
            print(lines[-1], flush=True)
    summary = f"{killed} of {len(survivors)} survivors killed by the current tests"
    print(summary)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines + [summary]) + "\n")


if __name__ == "__main__":
    main()
