"""The shapes-world classifier (FVD features, IS classes, attribute accuracy): shapes, save/load, training through
train.py, and the shipped classifier recognising true clips of a world seed it never saw."""

from __future__ import annotations

import pytest
import torch

from fusionframes.data.samplers import KeyframeSampler
from fusionframes.data.shapes import ShapesWorld
from fusionframes.data.shapes_dataset import ShapesDataset
from fusionframes.metrics.shapes import ShapesClassifierAccuracy
from fusionframes.models.shapes_classifier import ATTRIBUTE_CLASSES, ShapesVideoClassifier
from fusionframes.training import train
from fusionframes.utils.resolvers import ASSETS_DIR


def test_embedding_logits_and_joint_distribution():
    torch.manual_seed(0)
    model = ShapesVideoClassifier(width=8, feature_dim=16, resolution=32).eval()
    videos = torch.rand(3, 5, 3, 48, 48) * 2 - 1  # any frame count; frames resized to 32
    assert model(videos).shape == (3, 16) and model.num_features == 16
    logits = model.logits(videos)
    assert {k: v.shape[1] for k, v in logits.items()} == {k: len(v) for k, v in ATTRIBUTE_CLASSES.items()}
    joint = model.joint_log_probs(videos)
    assert joint.shape == (3, 6 * 4 * 6)
    assert torch.allclose(joint.logsumexp(-1), torch.zeros(3), atol=1e-5)
    # Colour-major order: class (colour c, shape s, motion m) is index (c * 4 + s) * 6 + m.
    expected = (logits["colour"].log_softmax(-1)[1, 2] + logits["shape"].log_softmax(-1)[1, 3]
                + logits["motion"].log_softmax(-1)[1, 5])
    assert torch.allclose(joint[1, (2 * 4 + 3) * 6 + 5], expected, atol=1e-5)


def test_save_and_load_round_trip_and_errors(tmp_path):
    model = ShapesVideoClassifier(width=8, feature_dim=16, resolution=32).eval()
    model.save_pretrained(tmp_path / "classifier")
    loaded = ShapesVideoClassifier.from_pretrained(tmp_path / "classifier")
    videos = torch.rand(2, 4, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded(videos), model(videos))
    with pytest.raises(FileNotFoundError, match=r"evaluation\.metrics\.fvd_detector=.* does not exist"):
        ShapesVideoClassifier.from_pretrained(tmp_path / "missing", "evaluation.metrics.fvd_detector")


def test_train_py_trains_and_exports_the_classifier(tiny_config, tmp_path):
    metrics = train(tiny_config("shapes/classifier", "data.sampler.num_frames=4", "model.classifier.width=8",
                                "model.classifier.feature_dim=16"))
    assert "val/acc_all" in metrics and torch.isfinite(torch.tensor(metrics["train/loss"]))
    loaded = ShapesVideoClassifier.from_pretrained(tmp_path / "a" / "export" / "classifier")
    assert loaded.config == {"width": 8, "feature_dim": 16, "resolution": 32}


def test_shipped_classifier_recognises_true_clips_of_an_unseen_world_seed():
    classifier = ShapesVideoClassifier.from_pretrained(ASSETS_DIR / "shapes_classifier")
    data = ShapesDataset(ShapesWorld(resolution=64, seed=777), KeyframeSampler(16, 12), length=32, seed=777)
    metric = ShapesClassifierAccuracy(classifier)
    with torch.no_grad():
        for start in (0, 16):
            samples = [data[i] for i in range(start, start + 16)]
            metric.update(torch.stack([s["video"] for s in samples]), [s["caption"] for s in samples])
    accuracy = {k: float(v) for k, v in metric.compute().items()}
    assert min(accuracy[k] for k in ("colour", "background", "motion")) >= 0.9, accuracy
    assert accuracy["shape"] >= 0.8 and accuracy["speed"] >= 0.8, accuracy
