"""Finer comparisons: unbiased CKA, and CKA and change per ground-truth class."""

import json

import numpy as np
import pytest

from featvis.compare.cka import Accumulator, UnbiasedAccumulator, linear_cka
from featvis.compare.pairs import MIN_CLASS_PIXELS, class_numbers, pair_numbers
from featvis.compare.sketch import Sketch, SketchWriter
from featvis.record.sampling import NO_CLASS, classes_at
from featvis.sweep.summary import summarize
from tests.test_compare_sweep import IMAGES, LAYERS, _job

P = 256


def _both(xs, ys):
    biased, unbiased = Accumulator(), UnbiasedAccumulator()
    for x, y in zip(xs, ys):
        biased.add(x, y)
        unbiased.add(x, y)
    return biased.value(), unbiased.value()


def test_unbiased_cka_of_unrelated_features_is_near_0_where_the_plain_one_is_not():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(P, 256)) for _ in range(3)]  # 3 images x 256 pixels, 256 channels
    ys = [rng.normal(size=(P, 256)) for _ in range(3)]
    biased, unbiased = _both(xs, ys)
    assert 0.2 < biased < 0.3  # 0.247: the plain estimator's upward bias with as many channels as pixels/3
    assert abs(unbiased) < 0.02  # -0.004
    rotation = np.linalg.qr(rng.normal(size=(256, 256)))[0]
    same_b, same_u = _both(xs, [2 * x @ rotation for x in xs])
    assert abs(same_b - 1) < 1e-9 and abs(same_u - 1) < 1e-9  # scale and rotation do not count
    related = [x[:, :64] + 0.5 * rng.normal(size=(P, 64)) for x in xs]
    b, u = _both([x[:, :64] for x in xs], related)
    assert 0.6 < u < b < 1  # related features: both high, the plain one a little higher


def test_unbiased_cka_needs_no_more_pixels_than_it_has():
    rng = np.random.default_rng(1)
    few = UnbiasedAccumulator()
    few.add(rng.normal(size=(3, 8)), rng.normal(size=(3, 8)))  # under 4 rows: left out
    assert np.isnan(few.value())
    assert np.isnan(linear_cka(np.ones((5, 3)), rng.normal(size=(5, 3))))


def test_the_class_under_each_point_leaves_padding_and_ignored_pixels_out():
    gt = np.zeros((40, 60), np.uint8)
    gt[:, 30:] = 1
    gt[:10, :] = 255
    points = np.array([[0.5, 0.2], [0.5, 0.7], [0.1, 0.2], [0.95, 0.2], [0.5, 0.99]])
    # the image resized to 40x60 and padded to 50x60: rows past 0.8 of the input are padding
    meta = {"img_shape": (40, 60), "pad_shape": (50, 60)}
    assert classes_at(gt, points, meta).tolist() == [0, 1, NO_CLASS, NO_CLASS, 1]
    assert classes_at(gt, points, {"img_shape": (40, 60)}).tolist() == [0, 1, NO_CLASS, 0, 1]


def _sketches(tmp_path, perturb_class=None):
    """Two sketches of 3 images, 2 layers, classes 0 (background, half the pixels), 1 and 2 under the points;
    b = a, except the features of `perturb_class`'s pixels."""
    rng = np.random.default_rng(2)
    out = []
    for side in "ab":
        writer = SketchWriter(pixels=P, seed=0)
        for i in range(3):
            classes = np.repeat([0, 0, 1, 2], P // 4).astype(np.int16)
            rng_i = np.random.default_rng(10 + i)
            for layer in ("l0", "l1"):
                feats = rng_i.normal(size=(P, 32)) + classes[:, None]
                if side == "b" and perturb_class is not None:
                    hit = classes == perturb_class
                    feats[hit] += 1.5 * rng.normal(size=(int(hit.sum()), 32))
                writer.add(f"im{i}", layer, feats.astype(np.float16), None)
            writer.add_classes(f"im{i}", classes)
        out.append(Sketch(writer.write(tmp_path / side)))
    return out


def test_per_class_cka_of_a_sketch_with_itself_is_1_for_every_class(tmp_path):
    a, _ = _sketches(tmp_path)
    found = class_numbers(a, a, "l0")
    assert sorted(found) == [0, 1, 2]
    for c, numbers in found.items():
        assert numbers.pixels == 3 * P // (2 if c == 0 else 4)
        assert numbers.numbers.cka is None  # per class: the unbiased estimator only
        assert abs(numbers.numbers.cka_unbiased - 1) < 1e-9
        assert numbers.numbers.change == 0.0


def test_perturbing_what_the_background_sees_lowers_its_cka_most(tmp_path):
    a, b = _sketches(tmp_path, perturb_class=0)
    found = {c: n.numbers for c, n in class_numbers(a, b, "l1").items()}
    assert found[0].cka_unbiased < 0.6
    assert min(found[1].cka_unbiased, found[2].cka_unbiased) > 1 - 1e-6
    assert found[1].change == 0.0 and found[0].change > 0.5
    whole = pair_numbers(a, b, "l1")  # the whole-image number hides how much the background moved
    assert whole.cka_unbiased > found[0].cka_unbiased + 0.1


def test_a_class_with_too_few_pixels_has_no_number(tmp_path):
    writer = SketchWriter(pixels=P, seed=0)
    rng = np.random.default_rng(3)
    classes = np.zeros(P, np.int16)
    classes[: MIN_CLASS_PIXELS - 1] = 5
    writer.add("im", "l", rng.normal(size=(P, 8)).astype(np.float16), None)
    writer.add_classes("im", classes)
    sketch = Sketch(writer.write(tmp_path))
    found = class_numbers(sketch, sketch, "l")
    assert found[5].pixels == MIN_CLASS_PIXELS - 1 and found[5].numbers is None
    assert found[0].numbers is not None


def test_the_summary_reports_classes_and_both_estimators(tmp_path):
    sweep = tmp_path / "sweep"
    rng = np.random.default_rng(4)
    classes = np.repeat([0, 1], 32).astype(np.int16)
    feats = {stem: {layer: rng.normal(size=(64, 16)).astype(np.float16) for layer in LAYERS} for stem in IMAGES}
    moved = {stem: {layer: (f + (classes[:, None] == 1) * rng.normal(size=f.shape) * (layer == LAYERS[1]))
                    .astype(np.float16) for layer, f in by.items()} for stem, by in feats.items()}
    for num, (name, f) in enumerate([("a.pth", feats), ("b.pth", moved)]):
        _job(sweep, num, name, f)
        path = sweep / str(num) / "featvis" / "sketch.npz"
        writer = SketchWriter(pixels=64, seed=0, meta={"classes": ["road", "car"], "estimator": "unbiased"})
        for stem in IMAGES:
            for layer in LAYERS:
                writer.add(stem, layer, f[stem][layer], None)
            writer.add_classes(stem, classes)
        writer.write(path.parent)
    out = summarize(sweep)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint_estimator"] == "unbiased"
    rows = {(e["layer"], e["class"]): e for e in summary["class_similarity"]}
    assert sorted(rows) == sorted((layer, c) for layer in LAYERS for c in ("road", "car"))
    assert rows[(LAYERS[1], "car")]["cka_unbiased"] < 0.9 and rows[(LAYERS[1], "road")]["cka_unbiased"] > 1 - 1e-6
    assert rows[(LAYERS[1], "car")]["cka"] is None
    assert rows[(LAYERS[0], "car")]["pixels"] == 64 and rows[(LAYERS[0], "car")]["note"] is None
    for entry in summary["checkpoint_similarity"]:
        assert set(entry) == {"a", "b", "layer", "cka", "change", "cka_unbiased"}
    ranked = {r["layer"]: r["by_job"]["model.checkpoint=b.pth"]["cka"] for r in summary["checkpoint_ranking"]}
    similar = {e["layer"]: e["cka_unbiased"] for e in summary["checkpoint_similarity"]}
    assert ranked == similar  # compare.estimator=unbiased: the shown CKA is the unbiased one
    page = (out / "index.html").read_text()
    assert "By class" in page and "unbiased CKA" in page and "<th>car<br>" in page


# --- different models of one sweep, layer by layer ---

def _configs(tmp_path):
    from featvis.data.paths import ASSETS

    demo = ASSETS / "configs" / "demo_pspnet.py"
    copy = tmp_path / "demo_copy.py"
    copy.write_text(demo.read_text())
    narrow = tmp_path / "demo_narrow.py"  # half the channels everywhere: another model
    narrow.write_text(f"_base_ = {str(demo)!r}\nmodel = dict(backbone=dict(stem_channels=8, base_channels=8), "
                      "decode_head=dict(in_channels=64, channels=16), "
                      "auxiliary_head=dict(in_channels=32, channels=16))\n")
    return demo, copy, narrow


def test_models_of_a_sweep_are_compared_every_layer_with_every_layer(tmp_path):
    from featvis.data.paths import ASSETS
    from tests.helpers import run_cli

    demo, copy, narrow = _configs(tmp_path)
    sweep = tmp_path / "sweep"
    demo_data = ASSETS / "demo"
    checkpoint = ASSETS / "checkpoints" / "demo_pspnet.pth"
    proc = run_cli("-m", f"model.config={demo},{copy},{narrow}", f"model.checkpoint={checkpoint}",
                   "model.strict=false", "layers=backbone", "max_images=2", "backends=[local]",
                   f"image={demo_data / 'images'}", f"gt_mask={demo_data / 'masks'}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((sweep / "summary" / "summary.json").read_text())
    pairs = {p["model_b"]: p for p in summary["model_similarity"]}
    assert sorted(pairs) == ["demo_copy.py", "demo_narrow.py"]
    same = pairs["demo_copy.py"]
    assert same["model_a"] == "demo_pspnet.py" and same["layers_a"] == same["layers_b"]
    layers = same["layers_a"]
    assert len(layers) == 4
    for i in range(4):  # a model with itself: 1 on the diagonal, and each layer most like itself
        assert abs(same["cka"][i][i] - 1) < 1e-5 and abs(same["cka_unbiased"][i][i] - 1) < 1e-5
        assert same["best"][layers[i]] == layers[i]
    other = pairs["demo_narrow.py"]  # 8..64 channels against 16..128: they compare, every cell a number
    assert all(0 <= v <= 1 for row in other["cka"] for v in row) and len(other["cka"]) == 4
    assert all(match in layers for match in other["best"].values())
    for p in pairs.values():
        assert (sweep / "summary" / p["file"]).is_file()
    page = (sweep / "summary" / "index.html").read_text()
    assert "Models compared" in page and "most like" in page
    assert summary["checkpoint_similarity"] == []  # one checkpoint per model: nothing to compare by checkpoint


# --- classes in feature space ---

def test_separability_is_1_for_classes_apart_and_near_chance_for_shuffled_labels():
    from featvis.compare.embedding import Pixels, project_2d, separability

    rng = np.random.default_rng(5)
    classes = np.repeat(np.arange(3), 100)
    images = np.tile(np.repeat(np.arange(4), 25), 3)
    apart = rng.normal(size=(300, 16)) + 6 * np.eye(16)[classes]
    found = separability(Pixels(apart, classes, images))
    assert found.accuracy == 1.0 and abs(found.chance - 1 / 3) < 1e-9 and found.classes == 3
    mixed = separability(Pixels(rng.normal(size=(300, 16)), classes, images))
    assert mixed.accuracy < 0.5  # about chance (1/3): the layer does not tell them apart
    rare = np.where(np.arange(300) < 270, 0, 1)  # 90% one class, features that say nothing: balanced, near 1/2
    lopsided = separability(Pixels(rng.normal(size=(300, 16)), rare, images))
    assert lopsided.chance == 0.5 and lopsided.accuracy < 0.75
    coords, share = project_2d(apart)
    assert coords.shape == (300, 2) and 0 < share <= 1
    assert separability(Pixels(apart, np.zeros(300, int), images)).accuracy is None  # one class: no number


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_the_summary_draws_each_layers_pixels_by_class_with_a_legend(tmp_path, method):
    sweep = tmp_path / "sweep"
    rng = np.random.default_rng(6)
    classes = np.repeat([0, 2], 32).astype(np.int16)  # class 1 is absent
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    for num, name in enumerate(["a.pth", "b.pth"]):
        feats = {stem: {layer: (rng.normal(size=(64, 16)) + 4 * (classes[:, None] == 2) * (i + 1)).astype(np.float16)
                        for i, layer in enumerate(LAYERS)} for stem in IMAGES}
        _job(sweep, num, name, feats)
        writer = SketchWriter(pixels=64, seed=0, meta={"classes": ["sky", "grass", "car"], "palette": palette,
                                                       "embedding": method})
        for stem in IMAGES:
            for layer in LAYERS:
                writer.add(stem, layer, feats[stem][layer], None)
            writer.add_classes(stem, classes)
        writer.write(sweep / str(num) / "featvis")
    out = summarize(sweep)
    summary = json.loads((out / "summary.json").read_text())
    rows = {(e["job"], e["layer"]): e for e in summary["class_separability"]}
    assert len(rows) == 2 * len(LAYERS) and all(e["classes"] == 2 and e["pixels"] == 128 for e in rows.values())
    assert all(e["accuracy"] > 0.9 for e in rows.values())  # 4 sigma apart and more: the classes separate
    assert sorted(summary["embeddings"]) == sorted(LAYERS)
    import cv2

    picture = cv2.imread(str(out / summary["embeddings"][LAYERS[0]]))[..., ::-1]
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert (255, 0, 0) in colours and (0, 0, 255) in colours  # sky and car: points and legend
    assert (0, 255, 0) not in colours  # grass is not in the images: neither drawn nor in the legend
    page = (out / "index.html").read_text()
    assert "Classes in feature space" in page and summary["embeddings"][LAYERS[0]] in page
    assert summary["embedding_method"] == method
    assert all((e["pca_variance"] is None) == (method == "tsne") for e in rows.values())
    first = (out / summary["embeddings"][LAYERS[0]]).read_bytes()
    from featvis.sweep import embeddings

    embeddings._CACHE.clear()
    summarize(sweep)  # computed again from the sketches: the same picture (seeded)
    assert (out / summary["embeddings"][LAYERS[0]]).read_bytes() == first


def test_images_without_ground_truth_are_compared_by_the_baselines_predicted_class(tmp_path):
    sweep = tmp_path / "sweep"
    rng = np.random.default_rng(7)
    predicted = np.repeat([0, 3], 32).astype(np.int16)
    feats = {stem: {layer: rng.normal(size=(64, 16)).astype(np.float16) for layer in LAYERS} for stem in IMAGES}
    for num, name in enumerate(["a.pth", "b.pth"]):
        _job(sweep, num, name, feats)
        writer = SketchWriter(pixels=64, seed=0, meta={"classes": ["road", "x", "y", "car"]})
        for stem in IMAGES:
            for layer in LAYERS:
                writer.add(stem, layer, feats[stem][layer], None)
            writer.add_classes(stem, predicted if num == 0 else predicted[::-1], "pred")  # b predicts otherwise
        writer.write(sweep / str(num) / "featvis")
    summary = json.loads((summarize(sweep) / "summary.json").read_text())
    rows = summary["class_similarity"]
    assert {(e["class"], e["by"]) for e in rows} == {("road", "prediction"), ("car", "prediction")}
    assert all(abs(e["cka_unbiased"] - 1) < 1e-6 for e in rows)  # the baseline's classes: the same pixels on both sides
    assert summary["class_separability"] == []  # separability is by ground truth only
    assert "classes by the baseline&#39;s prediction" in (sweep / "summary" / "index.html").read_text()
