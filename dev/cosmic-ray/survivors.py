"""Prints a cosmic-ray session's tally and every surviving mutant as `line: old -> new`.

Usage: python dev/cosmic-ray/survivors.py SESSION.sqlite
"""

import sqlite3
import sys


def changed_lines(diff):
    old = [l[1:].strip() for l in diff.splitlines() if l.startswith("-") and not l.startswith("---")]
    new = [l[1:].strip() for l in diff.splitlines() if l.startswith("+") and not l.startswith("+++")]
    return " / ".join(old), " / ".join(new)


def main(path):
    db = sqlite3.connect(path)
    rows = db.execute(
        "select r.worker_outcome, r.test_outcome, count(*) from work_results r group by 1, 2"
    ).fetchall()
    total = db.execute("select count(*) from work_items").fetchone()[0]
    print(f"{path}: {total} mutants generated; outcomes {rows}")
    survivors = db.execute(
        "select s.start_pos_row, s.operator_name, s.occurrence, r.diff from work_results r "
        "join mutation_specs s using (job_id) where r.test_outcome = 'SURVIVED' "
        "order by s.start_pos_row, s.operator_name, s.occurrence").fetchall()
    for line, op, occ, diff in survivors:
        old, new = changed_lines(diff or "")
        print(f"line {line} {op.split('/')[-1]}#{occ}: {old}  ->  {new}")


if __name__ == "__main__":
    main(sys.argv[1])
