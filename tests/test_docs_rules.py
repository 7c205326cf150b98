"""The committed files speak of the product: no absolute path of the machine a run or a
command ran on (paths relative to the repository, or placeholders such as $FMNIST), and no
numbered work periods or tracker items ("session 6", "issue 22", "(#22)"): history is told by
date and commit. docs/benchmarks.md leads with today's numbers in at most 300 lines, the
history is in docs/CHANGELOG.md, and benchmarks/results holds one folder per study."""

import os
import re
import subprocess

from helpers import ROOT

# A path under one of the machines' roots; "/tmp" and friends inside a longer word (a URL's
# path, `mktemp`) do not count.
MACHINE_PATH = re.compile(r"(?<![\w.$~-])/(?:work|root|home|tmp|mnt|Users|scratch|opt/pypi)/")
# A numbered work period or tracker item: "session 6", "sessions 11-12", "issue 22",
# "Issue #22", "(#22)", "task #3", or "this session" and the like. A "#" after a word
# character (a mutant's id, `USub#7`) or "&" (an HTML entity) is no tracker item.
TRACKER = re.compile(r"\bsessions?\s+\d+|\bissues?\s+#?\d+|(?<![\w&#/])#\d{1,4}\b|\btasks?\s+#\d+"
                     r"|\b(?:this|next|previous|earlier|later|last)\s+sessions?\b"
                     r"|\bwork\s+periods?\b", re.IGNORECASE)
BENCHMARKS_MAX_LINES = 300


def committed_text_files():
    """(path, text) of every git-tracked file outside tests/ that is text (no NUL byte, UTF-8)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for path in files:
        if not path or path.startswith("tests/"):
            continue
        try:
            with open(os.path.join(ROOT, path), "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):  # deleted in the worktree, a submodule
            continue
        if b"\0" in data:
            continue
        try:
            yield path, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


def offending_lines(rule):
    found = []
    for path, text in committed_text_files():
        for number, line in enumerate(text.splitlines(), 1):
            if rule.search(line):
                found.append(f"{path}:{number}: {line.strip()[:120]}")
    return found


def test_no_committed_file_holds_an_absolute_machine_path():
    found = offending_lines(MACHINE_PATH)
    assert not found, "\n".join(found[:20])


def test_no_committed_file_speaks_of_work_periods_or_tracker_items():
    found = offending_lines(TRACKER)
    assert not found, ("say when by date and commit instead:\n" + "\n".join(found[:20]))


def test_the_rules_find_planted_violations():
    assert MACHINE_PATH.search('"out": "/work/pilots/run"')
    assert MACHINE_PATH.search("--fashion-mnist /tmp/fmnist")
    assert MACHINE_PATH.search("cd /Users/me/keras-infobal")
    assert not MACHINE_PATH.search("--data ../shared/data/cifar10-jpeg.tar.gz")
    assert not MACHINE_PATH.search("https://example.org/tmp/x")
    for planted in ("in session 6 we tried", "sessions 11-12", "Issue 22's targets",
                    "issue #23", "the fix (#22)", "see #7.", "task #3", "this session's CPU",
                    "the next session adds", "one work period"):
        assert TRACKER.search(planted), planted
    for fine in ("2026-12-01 (commit 5b36002)", "a cosmic-ray session's tally",
                 "ReplaceUnaryOperator_USub_UAdd#7", "&#39;", "# 1 comment", "issues a warning",
                 "the session's config"):
        assert not TRACKER.search(fine), fine


def test_benchmarks_lead_with_today_and_the_history_is_in_the_changelog():
    docs = os.path.join(ROOT, "docs")
    with open(os.path.join(docs, "benchmarks.md")) as f:
        benchmarks = f.read()
    lines = len(benchmarks.splitlines())
    assert lines <= BENCHMARKS_MAX_LINES, (
        f"docs/benchmarks.md has {lines} lines: move older measurements to docs/CHANGELOG.md")
    assert os.path.isfile(os.path.join(docs, "CHANGELOG.md"))
    assert "(CHANGELOG.md)" in benchmarks
    with open(os.path.join(ROOT, "README.md")) as f:
        assert "(docs/CHANGELOG.md)" in f.read()


def test_benchmark_results_hold_one_folder_per_study():
    results = os.path.join(ROOT, "benchmarks", "results")
    loose = [name for name in sorted(os.listdir(results))
             if not os.path.isdir(os.path.join(results, name)) and name != "README.md"]
    assert not loose, f"files outside a study folder in benchmarks/results: {loose}"
    assert [name for name in os.listdir(results) if os.path.isdir(os.path.join(results, name))]
