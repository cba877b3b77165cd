"""Samplers and augmentation: target ratios, proxies worked by hand, train-only, deterministic by seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hydra.utils import instantiate

from src.data.augment import EasyDataAugmentation, delete, insert, swap
from src.data.datamodule import TextDataModule
from src.data.records import LabelledData, Split
from src.data.sampling import RandomResampler, proxy_classes
from src.errors import ConfigError
from tests.helpers import compose_train


def test_rarest_proxy_hand_worked():
    # label counts: 0 -> 3, 1 -> 2, 2 -> 1
    targets = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]])
    assert proxy_classes(targets, "rarest").tolist() == [0, 1, 2, -1]


def test_powerset_proxy_classes_equal_label_sets():
    targets = np.array([[1, 0], [0, 1], [1, 0], [1, 1]])
    keys = proxy_classes(targets, "powerset")
    assert keys[0] == keys[2] and len({keys[0], keys[1], keys[3]}) == 3


@pytest.mark.parametrize("proxy", ["rarest", "powerset"])
def test_a_multiclass_row_is_classed_by_its_class(proxy):
    keys = proxy_classes(np.eye(3)[[2, 0, 2, 1]], proxy)
    assert keys[0] == keys[2] and len(set(keys.tolist())) == 3
    assert proxy_classes(np.eye(3)[[2, 0, 2]], "rarest").tolist() == [2, 0, 2]


@pytest.mark.parametrize("mode,ratio", [("over", 0.5), ("over", 1.0), ("under", 0.25), ("under", 1.0)])
def test_resampler_hits_the_target_ratio(mode, ratio):
    classes = np.repeat([0, 1, 2], [400, 60, 10])
    indices = RandomResampler(mode, ratio=ratio, seed=3).resample_indices(np.eye(3)[classes])
    counts = np.bincount(classes[indices])
    assert counts.min() / counts.max() >= ratio - 1 / counts.max()
    if mode == "over":  # nothing is lost, minorities are repeated rows of their own class
        assert set(indices.tolist()) == set(range(len(classes))) and counts.max() == 400
    else:  # a subset without repeats, the smallest class kept whole
        assert len(set(indices.tolist())) == len(indices) and counts.min() == 10


def test_resampler_is_deterministic_by_seed():
    classes = np.repeat([0, 1], [50, 5])
    first, again, other = (RandomResampler("over", 1.0, seed=s).resample_indices(np.eye(2)[classes])
                           for s in (1, 1, 2))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_multilabel_oversampling_raises_the_rarest_label():
    rng = np.random.default_rng(0)
    targets = (rng.random((300, 4)) < [0.5, 0.3, 0.1, 0.02]).astype(np.float32)
    indices = RandomResampler("over", ratio=0.5, seed=0).resample_indices(targets)
    before, after = targets.sum(0) / len(targets), targets[indices].sum(0) / len(indices)
    assert after[3] > 3 * before[3]


@pytest.mark.parametrize("kwargs", [{"mode": "sideways"}, {"mode": "over", "ratio": 0}, {"mode": "over", "ratio": 2},
                                    {"mode": "over", "proxy": "random"}])
def test_resampler_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        RandomResampler(**kwargs)


def data_with_minority(rows: int = 60) -> LabelledData:
    texts = [f"common words number {i} here today" for i in range(rows)]
    labels = [[0] for _ in range(rows)]
    texts[:2] = ["a rare sentence about grief and loss", "another rare one"]
    labels[:2] = [[1], [0, 1]]
    train = Split(texts, labels, [f"train.jsonl:{i + 1}" for i in range(rows)])
    val = Split(["held out text for validation"], [[1]])
    return LabelledData({"train": train, "val": val}, ["common", "rare"], "multilabel")


def test_eda_copies_only_minority_rows_and_is_deterministic():
    data = data_with_minority()
    eda = EasyDataAugmentation(rate=0.3, copies=3, minority_below=0.1, seed=7)
    first = eda(data.splits["train"], data.num_labels)
    again = eda(data.splits["train"], data.num_labels)
    other = EasyDataAugmentation(rate=0.3, copies=3, minority_below=0.1, seed=8)(data.splits["train"], 2)
    assert len(first) == 60 + 2 * 3
    assert first.texts == again.texts and first.texts[60:] != other.texts[60:]
    assert first.texts[:60] == data.splits["train"].texts  # originals kept, in order
    assert first.labels[60:] == [[1]] * 3 + [[0, 1]] * 3
    assert first.origin[60] == "train.jsonl:1 (eda copy 1)"


def test_eda_operations_by_hand():
    rng = np.random.default_rng(0)
    words = "one two three four five six".split()
    assert sorted(swap(words, 2, rng)) == sorted(words)
    inserted = insert(words, 2, rng)
    assert len(inserted) == 8 and set(inserted) == set(words)
    kept = delete(words, 0.5, rng)
    assert 1 <= len(kept) <= 6 and all(w in words for w in kept)
    assert len(delete(["only"], 0.99, rng)) == 1


def test_eda_rejects_bad_options():
    with pytest.raises(ConfigError, match="operations"):
        EasyDataAugmentation(operations=["synonym"])
    with pytest.raises(ConfigError, match="rate"):
        EasyDataAugmentation(rate=1.5)


class InMemory:
    def __init__(self, data):
        self.data = data

    def load(self):
        return self.data


def test_datamodule_augments_and_resamples_train_only(tiny_bert):
    data = data_with_minority()
    module = TextDataModule(InMemory(data), tokenizer=tiny_bert, sampler=RandomResampler("over", 1.0, seed=0),
                            augment=EasyDataAugmentation(copies=2, minority_below=0.1, seed=0))
    module.setup()
    assert len(module.data.splits["train"]) == 64
    assert len(module.data.splits["val"]) == 1 and module.data.splits["val"].texts == data.splits["val"].texts
    train_targets = module.dataset("train").targets.numpy()
    assert Counter(proxy_classes(train_targets, "rarest").tolist()) == {0: 58, 1: 58}
    assert len(module.dataset("val")) == 1


def test_feature_sampler_with_a_text_model_is_refused(tiny_bert):
    class FeatureOnly:
        def resample_features(self, features, targets, space):
            return features, targets

    module = TextDataModule(InMemory(data_with_minority()), tokenizer=tiny_bert, sampler=FeatureOnly())
    with pytest.raises(ConfigError, match="it needs embeddings"):
        module.setup()


@pytest.mark.parametrize("sampler", ["oversample", "undersample"])
def test_sampler_and_augment_groups_instantiate_into_the_datamodule(tmp_path, sampler):
    cfg = compose_train(tmp_path, [f"sampler={sampler}", "augment=eda", "seed=5"])
    module = instantiate(cfg.data)
    assert isinstance(module.sampler, RandomResampler) and module.sampler.seed == 5
    assert module.sampler.mode == {"oversample": "over", "undersample": "under"}[sampler]
    assert isinstance(module.augment, EasyDataAugmentation) and module.augment.seed == 5
    plain = instantiate(compose_train(tmp_path, []).data)
    assert plain.sampler is None and plain.augment is None
