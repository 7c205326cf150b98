"""The README's (and docs') examples run as written; their tables are the committed results."""

import glob
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT


def block(path, marker, lang="python"):
    text = open(os.path.join(ROOT, path)).read()
    start = text.index(marker)
    return re.search(rf"```{lang}\n(.*?)```", text[start:], re.S).group(1)


def readme_example():
    return block("README.md", "<!-- readme-example")


def result_file(stem):
    """benchmarks/results/<study>/<stem>.md: every results file lives in its study's folder."""
    found = glob.glob(os.path.join(ROOT, "benchmarks", "results", "*", stem + ".md"))
    assert len(found) == 1, (stem, found)
    return found[0]


@pytest.mark.data
def test_readme_fine_tune_block_keeps_batch_norm_frozen_and_loses_no_accuracy():
    """The fine-tune block on 2,000 CIFAR-10 training images, scored on 1,000 test images
    after each stage: unfreezing must not lose accuracy, and the encoder's BatchNormalization
    stays in inference mode (its moving statistics unchanged, training-mode outputs equal to
    inference-mode ones)."""
    from helpers import CIFAR_TAR

    if not os.path.exists(CIFAR_TAR):
        pytest.skip(f"{CIFAR_TAR} is absent: the real CIFAR-10 copy lives in ../shared/data")
    import keras

    from keras_infobal.applications import InfoBalCIFAR, unfreeze
    from keras_infobal.datasets import load_cifar10

    code = block("README.md", "<!-- readme-finetune")
    frozen_part, _, tune_part = code.partition("unfreeze(encoder)")
    tune_part = "unfreeze(encoder)" + tune_part
    x_all, y_all, _ = load_cifar10("train", source=CIFAR_TAR)
    x_te, y_te, _ = load_cifar10("test", source=CIFAR_TAR)
    rng = np.random.default_rng(0)
    i, j = rng.permutation(len(x_all))[:2000], rng.permutation(len(x_te))[:1000]
    keras.utils.set_random_seed(0)
    scope = {"keras": keras, "InfoBalCIFAR": InfoBalCIFAR, "unfreeze": unfreeze,
             "x": x_all[i], "y": y_all[i]}
    exec(frozen_part.replace("epochs=10", "epochs=10, verbose=0"), scope)
    clf, encoder = scope["clf"], scope["encoder"]
    frozen = clf.evaluate(x_te[j], y_te[j], verbose=0, return_dict=True)["accuracy"]
    moving = [w for w in encoder.weights if "moving_" in w.path]  # BN statistics
    stats = [keras.ops.convert_to_numpy(w).copy() for w in moving]
    exec(tune_part.replace("epochs=2", "epochs=2, verbose=0"), scope)
    tuned = clf.evaluate(x_te[j], y_te[j], verbose=0, return_dict=True)["accuracy"]
    after = [keras.ops.convert_to_numpy(w) for w in moving]
    assert stats and all(np.array_equal(a, b) for a, b in zip(stats, after))
    batch = x_te[j][:64]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clf(batch, training=True)),
                               keras.ops.convert_to_numpy(clf(batch, training=False)),
                               rtol=1e-4, atol=1e-5)
    # 1,000 test images: one standard error is ~1.4 points; batch statistics cost ~2 points.
    assert frozen > 0.5 and tuned >= frozen - 0.005, (frozen, tuned)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_readme_example_trains_at_any_image_size(size, tmp_path, monkeypatch):
    import keras

    code = readme_example()
    assert "(256, 64, 64, 3)" in code
    code = code.replace("(256, 64, 64, 3)", f"(256, {size}, {size}, 3)")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    model, backbone = namespace["model"], namespace["backbone"]
    assert model.image_shape == (size, size, 3)
    # DIM's trunk halves the image twice (an h x h map); the rows split makes 2 views of
    # (h/2) x h; the aggregator's stride-2 conv (256 filters) halves each view again.
    h = size // 4
    conv = 2 * math.ceil(h / 2 / 2) * math.ceil(h / 2) * 256
    assert namespace["feats"]["conv"].shape == (8, conv)
    assert namespace["feats"]["R"].shape == (8, 64)
    assert "mi_V1_V2" in namespace["history"].history
    loaded = keras.models.load_model(tmp_path / "infobal.keras")
    np.testing.assert_allclose(loaded.predict(namespace["images"][:4], verbose=0),
                               model.predict(namespace["images"][:4], verbose=0), atol=1e-5)
    from keras_infobal import InfoBalBackbone

    again = InfoBalBackbone.from_preset(str(tmp_path / "my_encoder"))
    np.testing.assert_allclose(again.predict(namespace["images"][:4], verbose=0),
                               backbone.predict(namespace["images"][:4], verbose=0), atol=1e-5)
    other = size + 16
    with pytest.raises(ValueError, match=f"built for {size}x{size} images; got {other}x{other}"):
        model.predict(np.zeros((2, other, other, 3), "uint8"), verbose=0)


@pytest.mark.bf16
def test_readme_recipe_runs(tmp_path, monkeypatch):
    import keras

    monkeypatch.chdir(tmp_path)
    code = block("docs/extending.md", "<!-- readme-recipe")
    namespace = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
        model = namespace["model"]
        assert model.augmented_pairs and model.backbone.encoder.compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    history = namespace["history"].history
    assert {"mi_R_V1", "mi_R_V2"} <= set(history) and "mi_V1_V2" not in history
    assert np.isfinite(history["loss"][-1])
    assert namespace["feats"]["fc"].shape == (8, 1024)


def readme_cli():
    commands = block("docs/cli.md", "<!-- readme-cli", "bash")
    return [line for line in commands.splitlines() if line and not line.startswith("#")]


@pytest.mark.slow
@pytest.mark.data
def test_readme_cli_commands_run_as_written(tmp_path):
    from helpers import CIFAR_TAR

    if not os.path.exists(CIFAR_TAR):
        pytest.skip(f"{CIFAR_TAR} is absent")
    # The commands use ../shared/data relative to the project root: run them from a copy of
    # that layout so nothing is written into the checkout.
    work = tmp_path / "project"
    work.mkdir()
    os.symlink(os.path.dirname(os.path.dirname(CIFAR_TAR)), tmp_path / "shared")
    for line in readme_cli():
        res = subprocess.run(line, shell=True, cwd=work, capture_output=True, text=True,
                             timeout=1800)
        assert res.returncode == 0, (line, res.stderr[-3000:])
    assert (work / "feats.npy").exists() and (work / "mi_vs_acc.png").exists()


def test_readme_test_command_is_what_ci_runs():
    # The README gives one test command; .ci/run is the install, then that command; the
    # command runs every part, the slow tests and the floors included.
    commands_block = block("README.md", "Then run every test", "bash")
    assert commands_block.strip() == "bash tests/run_all.sh"
    ci = [line.strip() for line in open(os.path.join(ROOT, ".ci", "run")).read().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == "bash tests/run_all.sh"
    assert not [line for line in ci if "pytest" in line]  # no test run outside the script
    script = open(os.path.join(ROOT, "tests", "run_all.sh")).read()
    for command in ("python -m pytest -q -n auto\n", "python -m pytest -q -n auto -m slow",
                    "ONEDNN_MAX_CPU_ISA=AVX2 python -m pytest -q -n auto -m backend",
                    "KERAS_BACKEND=jax python -m pytest -q -n auto -m backend",
                    "KERAS_BACKEND=torch python -m pytest -q -m backend", "bash .ci/floors"):
        assert command in script, command
    assert "set -euo pipefail" in script  # a failing part fails the whole command


# Today's measurements are shown in docs/benchmarks.md, older ones in docs/CHANGELOG.md.
TODAY = ["levels_speed_zen4_fused_bn", "bf16_workers", "profile_step_bf16_zen4_fused_bn",
         "xla_conv", "resnet18_cpu_speed", "pipeline"]
HISTORY = ["speed", "views_speed", "profile_step", "conv_layout", "levels_speed",
           "profile_step_avx2", "profile_step_bf16", "profile_torch", "profile_torch_avx2",
           "torch_bn_speed", "levels_speed_zen4", "profile_step_bf16_zen4",
           "profile_step_bf16_zen4_b"]


@pytest.mark.parametrize("stem,doc", [(s, "benchmarks.md") for s in TODAY]
                         + [(s, "CHANGELOG.md") for s in HISTORY])
def test_benchmark_tables_are_the_committed_results(stem, doc):
    """Every table row of a committed benchmark result appears verbatim in the doc that shows
    it, so its speed numbers are the ones its command wrote (regenerate both together)."""
    text = open(os.path.join(ROOT, "docs", doc)).read()
    path = result_file(stem)
    rows = [line for line in open(path).read().splitlines() if line.startswith("| ")]
    assert rows
    missing = [row for row in rows if row not in text]
    assert not missing, f"docs/{doc} lacks these rows of {path}: {missing[:3]}"


@pytest.mark.parametrize("stem", ["lambda_study", "seeded_mid", "seeded_scales",
                                  "note_experiment", "views_study", "recipe_study"])
def test_study_tables_are_the_committed_results(stem):
    """The InfoBal studies' tables and verdicts in docs/results.md are the lines their
    `lambda_study.py report` or `note_experiment.py` wrote (regenerate both together)."""
    text = open(os.path.join(ROOT, "docs", "results.md")).read()
    path = result_file(stem)
    lines = [line for line in open(path).read().splitlines() if line.startswith(("| ", "- "))]
    assert lines
    missing = [line for line in lines if line not in text]
    assert not missing, f"docs/results.md lacks these lines of {path}: {missing[:3]}"


def test_readme_preset_table_is_the_committed_results():
    """The README's preset table is the one collect_results.py wrote, and it lists every
    built-in preset with the accuracies its metadata records."""
    from keras_infobal.models import presets

    readme = open(os.path.join(ROOT, "README.md")).read()
    results = open(os.path.join(ROOT, "applications", "cifar10", "results.md")).read()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    assert len(rows) == len(presets.list_presets())
    for row in rows:
        assert row in results, row
    for name in presets.list_presets():
        meta = presets.load_metadata(name)
        row = next(r for r in rows if r.startswith(f"| `{name}`"))
        assert f"| {100 * meta['validation_accuracy']:.2f} | {100 * meta['test_accuracy']:.2f} |" in row



def test_readme_names_both_decoders_with_the_committed_accuracies():
    """The README's line on JPEG decoders gives check_presets.py's Pillow accuracies."""
    import json

    with open(os.path.join(ROOT, "applications", "cifar10", "preset_check.json")) as f:
        check = json.load(f)
    readme = " ".join(open(os.path.join(ROOT, "README.md")).read().split())
    assert "decode the JPEGs with the package's loader (TensorFlow's decoder)" in readme
    for name, r in check["presets"].items():
        assert f"`{name}` {100 * r['measured_pil']:.2f}" in readme, name
    px = check["decoder_pixel_difference"]
    assert f"changes {100 * px['share_of_values_differing']:.0f}% of the pixel values" in readme
    assert f"by at most {px['largest_difference_in_levels']} levels" in readme


def test_preset_check_covers_every_preset():
    """applications/cifar10/preset_check.json (check_presets.py on the full test set) scored
    every built-in preset's classifier, and found each at the accuracy its metadata records."""
    import json

    from keras_infobal.models import presets

    with open(os.path.join(ROOT, "applications", "cifar10", "preset_check.json")) as f:
        check = json.load(f)
    assert check["test_images"] == 10000
    assert sorted(check["presets"]) == sorted(presets.list_presets())
    for name, r in check["presets"].items():
        recorded = presets.load_metadata(name)["test_accuracy"]
        assert r["recorded"] == recorded, name
        assert abs(r["measured"] - recorded) <= check["tolerance"], name

def test_readme_is_short():
    assert len(open(os.path.join(ROOT, "README.md")).read().splitlines()) < 200


def test_relative_links_and_figures_in_the_docs_resolve():
    import glob
    import re

    broken = []
    for path in [os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "*.md")):
        text = open(path).read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            file = target.split("#")[0]
            if not os.path.exists(os.path.join(os.path.dirname(path), file)):
                broken.append(f"{os.path.relpath(path, ROOT)}: {target}")
    assert not broken, broken


def test_targets_table_is_the_committed_results():
    """docs/results.md's table of the default encoder's targets is the one targets.py wrote."""
    text = open(os.path.join(ROOT, "docs", "results.md")).read()
    path = os.path.join(ROOT, "applications", "cifar10", "targets.md")
    rows = [line for line in open(path).read().splitlines() if line.startswith("| ")]
    assert len(rows) >= 4
    missing = [row for row in rows if row not in text]
    assert not missing, f"docs/results.md lacks these rows of {path}: {missing[:3]}"


def test_readme_speed_table_is_the_committed_results():
    """The README's speed rows (its "Speed" section) are rows of the committed benchmarks at
    both instruction-set levels, one column per host, whose CPU lines the README quotes."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Speed", 1)[1].split("\n## ", 1)[0]
    stems = ("levels_speed", "levels_speed_zen4_fused_bn")  # the table's columns, in order
    results = [open(result_file(s)).read() for s in stems]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
    assert len(rows) >= 4
    for row in rows:
        name, *values = [cell.strip() for cell in row.strip("| ").split(" | ")]
        assert len(values) == len(stems), row
        for stem, text, value in zip(stems, results, values):
            assert f"| {name} | {value} |" in text, f"{stem}.md lacks the README row {row!r}"
    for stem, text in zip(stems, results):
        cpu = text.splitlines()[0].split(";")[0]  # "CPU: <model> (<cores>; flags ..."
        assert cpu in section and f"`{stem}.md`" in section


def test_transfer_pilot_table_is_the_committed_results():
    """The transfer pilots' table in the pilots README is what `transfer_pilot.py --summarize`
    prints from the committed results."""
    sys.path.insert(0, os.path.join(ROOT, "applications", "cifar10", "pilots"))
    import transfer_pilot

    pilots = os.path.join(ROOT, "applications", "cifar10", "pilots")
    table = transfer_pilot.summarize(os.path.join(pilots, "transfer", "transfer.json"))
    assert table in open(os.path.join(pilots, "README.md")).read()
