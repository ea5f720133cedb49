"""Tests of the embedded demo: scenes, training determinism, shipped assets."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from featvis.demo.scenes import CLASSES, DEMO_SEED, DEMO_SIZE, PALETTE, generate_scene, scene_rng
from featvis.demo.train import CONFIG_PATH, DEFAULT_OUT, EVAL_SEED, evaluate_miou, iou_counts, mean_iou, predict, train

DEMO_DIR = Path(__file__).resolve().parents[1] / 'featvis' / 'assets' / 'demo'
DEMO_STEMS = [f'scene_{i:03d}' for i in range(3)]
TEST_SEED = 4242  # never used for training, evaluation or the demo images


@pytest.fixture(scope='module')
def demo_model():
    from mmseg.apis import init_model
    return init_model(str(CONFIG_PATH), str(DEFAULT_OUT), device='cpu')


def test_scene_is_deterministic_and_labelled():
    img_a, lab_a = generate_scene(scene_rng(1, 2), 96, 128)
    img_b, lab_b = generate_scene(scene_rng(1, 2), 96, 128)
    assert img_a.shape == (96, 128, 3) and img_a.dtype == np.uint8
    assert lab_a.shape == (96, 128) and lab_a.dtype == np.uint8
    assert np.array_equal(img_a, img_b) and np.array_equal(lab_a, lab_b)
    assert lab_a.max() < len(CLASSES) and (lab_a > 0).any()


def test_training_is_deterministic():
    first = train(iters=3, seed=0, log_every=0).state_dict()
    second = train(iters=3, seed=0, log_every=0).state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_checkpoint_meta_and_size():
    ckpt = torch.load(DEFAULT_OUT, map_location='cpu', weights_only=True)
    meta = ckpt['meta']['dataset_meta']
    assert tuple(meta['classes']) == CLASSES
    assert len(meta['palette']) == len(CLASSES) and meta['palette'] == PALETTE
    assert DEFAULT_OUT.stat().st_size < 5 * 2**20


def test_checkpoint_miou_on_fresh_scenes():
    assert TEST_SEED != EVAL_SEED
    assert evaluate_miou(CONFIG_PATH, DEFAULT_OUT, n_images=16, seed=TEST_SEED) >= 0.8


@pytest.mark.parametrize('index', range(len(DEMO_STEMS)))
def test_shipped_demo_images(demo_model, index):
    stem = DEMO_STEMS[index]
    img_bgr = cv2.imread(str(DEMO_DIR / 'images' / f'{stem}.png'), cv2.IMREAD_COLOR)
    mask = cv2.imread(str(DEMO_DIR / 'masks' / f'{stem}.png'), cv2.IMREAD_UNCHANGED)
    img, label = generate_scene(scene_rng(DEMO_SEED, index), *DEMO_SIZE)
    assert np.array_equal(cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB), img)
    assert mask.ndim == 2 and np.array_equal(mask, label)
    pred = predict(demo_model, img)
    assert mean_iou(*iou_counts(pred, label.astype(np.int64))) >= 0.7
