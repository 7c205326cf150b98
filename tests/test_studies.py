"""The InfoBal studies' report (benchmarks/lambda_study.py): the seeds' statistics and the
verdicts it writes, on per-run results made up here."""

import json
import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import lambda_study  # noqa: E402


def test_difference_is_welch_standard_error():
    a, b = [0.61, 0.63, 0.60], [0.58, 0.59, 0.585, 0.57]
    d, se = lambda_study.difference(a, b)
    assert d == pytest.approx(np.mean(a) - np.mean(b))
    assert se == pytest.approx(math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 4))
    d, se = lambda_study.difference([0.7], [0.5, 0.6])
    assert d == pytest.approx(0.15) and math.isnan(se)
    with pytest.raises(ValueError, match="at least one value"):
        lambda_study.difference([], [0.5])


def _write_runs(root, cell, route, lam, val_fc, mi):
    for seed, (acc, m) in enumerate(zip(val_fc, mi)):
        path = os.path.join(root, "study", cell, f"seed{seed}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"route": route, "infomin_weight": lam, "seed": seed,
                       "val": {"fc": acc, "conv": 0.5}, "test": {"fc": acc, "conv": 0.5},
                       "monitor_view_mi": m, "seconds_per_epoch": [10.0, 8.0],
                       "config": {"recipe": "dim_pairs"},
                       "budget": {"epochs": 2, "images": 640, "batch_size": 64,
                                  "threads": 1}}, f)


def test_report_judges_each_route_against_lambda_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(lambda_study, "RESULTS", str(tmp_path))
    _write_runs(tmp_path, "dim", "none", 0.0, [0.50, 0.51, 0.49], [4.0, 4.1, 3.9])
    # CLUB's best lambda (0.1) clearly higher on val fc, with lower view MI; adversarial higher by between one
    # and two standard errors, which the table does not mark.
    _write_runs(tmp_path, "club_lambda0.03", "club", 0.03, [0.55, 0.56, 0.54], [3.5, 3.6, 3.4])
    _write_runs(tmp_path, "club_lambda0.1", "club", 0.1, [0.60, 0.61, 0.59], [3.0, 3.1, 2.9])
    _write_runs(tmp_path, "adversarial_lambda0.03", "adversarial", 0.03, [0.522, 0.512, 0.502],
                [4.0, 4.1, 3.9])
    lambda_study.report(type("Args", (), {"study": "study"})())
    md = open(tmp_path / "study" / "study.md").read()
    assert ("- club: best lambda on validation = 0.1 (fc 60.00 vs DIM 50.00, difference "
            "+10.00 points, larger seed std 1.00): beats lambda = 0 beyond the seed spread.") in md
    rows = {line.split(" | ")[0]: line for line in md.splitlines()
            if line.startswith(("| adversarial (", "| club ("))}
    # Welch's error of two 3-seed arms with std 1 point each: sqrt(2 / 3) = 0.82.
    assert rows["| club (0.1)"].startswith("| club (0.1) | +10.00 ± 0.82 * |")
    assert rows["| club (0.1)"].endswith("| -1.00 ± 0.08 * |")  # monitor, nats
    assert rows["| adversarial (0.03)"].startswith("| adversarial (0.03) | +1.20 ± 0.82 | ")
    assert " *" not in rows["| adversarial (0.03)"]
    assert "kNN" not in md  # no kNN column when the runs have no kNN
    saved = json.load(open(tmp_path / "study" / "study.json"))
    assert saved["differences"][2:] == [rows["| adversarial (0.03)"], rows["| club (0.1)"]]


def test_rescore_adds_the_missing_knn_layers_from_the_saved_model(tmp_path, monkeypatch):
    import keras

    import keras_infobal as kib
    from keras_infobal import datasets
    from keras_infobal.knn import knn_accuracy
    from test_datasets import make_folder

    monkeypatch.setenv("KERAS_INFOBAL_CACHE", str(tmp_path / "cache"))
    data = make_folder(str(tmp_path / "data"), n_per_class=4, classes=("a", "b", "c"))
    monkeypatch.setattr(lambda_study, "RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(lambda_study, "HERE", str(tmp_path))
    val = np.array([0, 5, 7])  # 3 of the 12 training images held out
    monkeypatch.setattr(lambda_study, "split_indices", lambda n: (val, None, None))
    x_tr, y_tr, _ = datasets.load_cifar10("train", source=data)
    x_te, y_te, _ = datasets.load_cifar10("test", source=data)

    keras.utils.set_random_seed(0)
    model = kib.InfoBal(kib.InfoBalBackbone(num_views=2, split="rows"), critic_units=8)
    model.extract_features(x_tr[:2])  # builds it
    run = tmp_path / "runs" / "study" / "dim" / "seed0"
    run.mkdir(parents=True)
    model.save(str(run / "model.keras"))
    result = tmp_path / "results" / "study" / "dim" / "seed0.json"
    result.parent.mkdir(parents=True)
    before = {"seed": 0, "knn_val": {"fc": 0.25}, "knn_test": {"fc": 0.5}}
    result.write_text(json.dumps(before))

    lambda_study.rescore(type("Args", (), {"study": "study", "data": data})())
    after = json.loads(result.read_text())
    assert after["knn_val"]["fc"] == 0.25 and after["knn_test"]["fc"] == 0.5  # kept
    assert after["knn_rescored"] == ["R", "conv"]
    bank = np.setdiff1d(np.arange(12), val)
    f_tr = model.extract_features(x_tr, layers=("conv", "R"))
    f_te = model.extract_features(x_te, layers=("conv", "R"))
    for layer in ("conv", "R"):
        assert after["knn_val"][layer] == pytest.approx(knn_accuracy(
            f_tr[layer][bank], y_tr[bank], f_tr[layer][val], y_tr[val]))
        assert after["knn_test"][layer] == pytest.approx(knn_accuracy(
            f_tr[layer][bank], y_tr[bank], f_te[layer], y_te))

    # A run whose model is gone cannot be rescored: the error names the file.
    result.write_text(json.dumps(before))
    os.remove(run / "model.keras")
    with pytest.raises(SystemExit, match="model.keras is not on this machine"):
        lambda_study.rescore(type("Args", (), {"study": "study", "data": data})())


def test_transfer_pilot_scores_held_out_rows_against_random_init(tmp_path, monkeypatch):
    """The transfer pilot fits the probe on the training rows it does not score on, and puts
    each model beside the same architecture with seed-0 weights (scored once per
    architecture)."""
    import keras

    import keras_infobal as kib
    from keras_infobal import datasets, evaluation

    sys.path.insert(0, os.path.join(ROOT, "applications", "cifar10", "pilots"))
    import transfer_pilot

    def train_classifier(f_train, y_train, f_test, y_test, **kwargs):
        """A stand-in for the converged probe (tested in test_evaluation), too slow to fit a
        dozen times here: a fingerprint of its inputs, so another row, label order, layer or
        weight changes it. The pilot's wiring is what this test checks."""
        f_train, f_test = np.asarray(f_train, "float64"), np.asarray(f_test, "float64")
        w = lambda a: np.arange(1, len(a) + 1) / len(a)  # noqa: E731  (row order matters)
        return float(w(f_train) @ f_train.sum(1) + 2 * w(f_test) @ f_test.sum(1)
                     + 3 * w(y_train) @ np.asarray(y_train) + 5 * w(y_test) @ np.asarray(y_test))

    monkeypatch.setattr(evaluation, "train_classifier", train_classifier)

    fit, held = transfer_pilot.validation_split(40, 8)
    assert len(held) == 8 and len(fit) == 32
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(40))
    with pytest.raises(ValueError, match="between 0 and the 40"):
        transfer_pilot.validation_split(40, 40)

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)  # grayscale, as Fashion-MNIST
    labels = np.arange(40) % 4
    (tmp_path / "fm").mkdir()
    np.savez(tmp_path / "fm" / "train.npz", images=images, labels=labels)
    paths = []
    for seed in (3, 4):
        keras.utils.set_random_seed(seed)
        model = kib.InfoBal(kib.InfoBalBackbone(num_views=2, split="rows"), critic_units=8)
        model.extract_features(np.zeros((2, 32, 32, 3), "uint8"))  # builds it
        paths.append(str(tmp_path / f"m{seed}.keras"))
        model.save(paths[-1])
    out = tmp_path / "transfer.json"
    transfer_pilot.main(["--fashion-mnist", str(tmp_path / "fm"), "--held-out", "8",
                         "--models", f"a={paths[0]}", f"b={paths[1]}", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["held_out"] == 8 and saved["fitted"] == 32

    x, y, _ = datasets.load_images(str(tmp_path / "fm" / "train.npz"), resize=(32, 32))

    def probe(model):
        f = model.extract_features(x, layers=("conv",))["conv"]
        return train_classifier(f[fit], y[fit], f[held], y[held])

    keras.utils.set_random_seed(0)
    model = kib.InfoBal(kib.InfoBalBackbone(num_views=2, split="rows"), critic_units=8)
    model.extract_features(np.zeros((2, 32, 32, 3), "uint8"))
    random_init = probe(model)
    for name, path in zip("ab", paths):
        r = saved["models"][name]
        assert r["pretrained"] == pytest.approx(probe(keras.saving.load_model(path)))
        assert r["random_init"] == pytest.approx(random_init)
        assert r["gain"] == pytest.approx(r["pretrained"] - r["random_init"])

    # --cifar10: the studies' validation columns, on the studies' splits (3 of 12 held out).
    from keras_infobal.knn import knn_accuracy
    from test_datasets import make_folder

    data = make_folder(str(tmp_path / "cifar"), n_per_class=4, classes=("a", "b", "c"))
    val, probe_tr = np.array([0, 5, 7]), np.array([1, 2, 3, 4, 6, 8])
    monkeypatch.setattr(lambda_study, "split_indices", lambda n: (val, probe_tr, None))
    monkeypatch.setenv("KERAS_INFOBAL_CACHE", str(tmp_path / "cache"))
    transfer_pilot.main(["--fashion-mnist", str(tmp_path / "fm"), "--held-out", "8",
                         "--models", f"a={paths[0]}", "--out", str(out), "--cifar10", data])
    saved = json.loads(out.read_text())
    assert set(saved["models"]) == {"a", "b"}  # b kept
    xc, yc, _ = datasets.load_cifar10("train", source=data)
    f = keras.saving.load_model(paths[0]).extract_features(xc, layers=("conv", "fc", "R"))
    bank = np.setdiff1d(np.arange(12), val)
    expected = {f"probe_{k}": train_classifier(f[k][probe_tr], yc[probe_tr], f[k][val], yc[val])
                for k in ("conv", "fc")}
    expected["knn_R"] = knn_accuracy(f["R"][bank], yc[bank], f["R"][val], yc[val])
    assert saved["models"]["a"]["cifar10_validation"] == pytest.approx(expected)

    with pytest.raises(SystemExit, match="another split"):
        transfer_pilot.main(["--fashion-mnist", str(tmp_path / "fm"), "--held-out", "10",
                             "--models", f"a={paths[0]}", "--out", str(out)])
    with pytest.raises(SystemExit):  # NAME=MODEL is the form
        transfer_pilot.main(["--fashion-mnist", str(tmp_path / "fm"), "--models", paths[0],
                             "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="No model file"):
        transfer_pilot.main(["--fashion-mnist", str(tmp_path / "fm"), "--held-out", "8",
                             "--models", f"c={tmp_path / 'gone.keras'}", "--out", str(out)])


def test_transfer_pilot_summary_means_each_arm_over_its_seeds(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "applications", "cifar10", "pilots"))
    import transfer_pilot

    cifar = {"probe_conv": 0.6, "probe_fc": 0.5, "knn_R": 0.4}
    models = {"x_seed0": {"pretrained": 0.91, "random_init": 0.88, "gain": 0.03,
                          "cifar10_validation": cifar},
              "x_seed1": {"pretrained": 0.90, "random_init": 0.88, "gain": 0.02},
              "y_seed0": {"pretrained": 0.85, "random_init": 0.88, "gain": -0.03}}
    (tmp_path / "t.json").write_text(json.dumps({"held_out": 6000, "models": models}))
    rows = {line.split(" | ")[0]: line for line in
            transfer_pilot.summarize(str(tmp_path / "t.json")).splitlines()}
    assert rows["| y_seed0"] == "| y_seed0 | 85.00 | 88.00 | -3.00 | - | - | - |"
    assert rows["| x_seed0"].endswith("| +3.00 | 60.00 | 50.00 | 40.00 |")
    gains = [3.0, 2.0]
    mean = rows["| x, mean ± std of 2"].split(" | ")
    assert mean[3] == f"+{np.mean(gains):.2f} ± {np.std(gains, ddof=1):.2f}"
    assert mean[4:] == ["-", "-", "- |"]  # x_seed1 has no CIFAR-10 scores: no mean of one
    assert not any(k.startswith("| y, mean") for k in rows)  # one seed: no mean row
