"""The committed files speak of the product: no absolute path of the machine a run or a
command ran on (paths relative to the repository, or placeholders such as $FMNIST)."""

import re
import subprocess

from helpers import ROOT

# A path under one of the machines' roots; "/tmp" and friends inside a longer word (a URL's
# path, `mktemp`) do not count.
MACHINE_PATH = re.compile(r"(?<![\w.$-])/(?:work|root|home|tmp|mnt|opt/pypi)/")


def test_no_committed_file_holds_an_absolute_machine_path():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    found = []
    for path in files:
        if path.startswith("tests/") or not path.endswith(
                (".md", ".json", ".py", ".sh", ".txt", ".cfg", ".toml", ".csv")):
            continue
        try:
            text = open(f"{ROOT}/{path}", encoding="utf-8").read()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{path}:{number}: {line.strip()[:120]}")
    assert not found, "\n".join(found[:20])


def test_the_rule_finds_a_planted_path():
    assert MACHINE_PATH.search('"out": "/work/pilots/run"')
    assert MACHINE_PATH.search("--fashion-mnist /tmp/fmnist")
    assert not MACHINE_PATH.search("--data ../shared/data/cifar10-jpeg.tar.gz")
    assert not MACHINE_PATH.search("https://example.org/tmp/x")
