"""Dense hard negatives: mined by a real dual encoder over a real (tiny) collection, filtered, then used in training."""

from __future__ import annotations

import random

import numpy as np
import pytest

from r2r_core.data.model import Collection, Document, Qrels, Query
from r2r_core.errors import R2RError
from r2r_core.student.dual import DualEncoderStudent
from r2r_core.student.mining import MiningConfig, mine_negatives
from r2r_core.student.train_dual import DualExample, DualTrainConfig, _contrastive_batch, train_dual_encoder

TEXTS = {
    "sort": "sorted() returns a new sorted list; list.sort() sorts a list in place.",
    "sort-copy": "sorted() returns a new sorted list; list.sort() sorts a list in place.",
    "sort-key": "The key argument of sorted() and list.sort() orders a list by a computed value.",
    "reverse": "list.reverse() reverses the items of a list in place.",
    "dict": "Merge two dictionaries with the | operator or dict.update().",
    "gc": "The gc module exposes the garbage collector and its thresholds.",
    "thread": "A Thread runs a callable in a separate thread of control.",
    "json": "json.dumps serialises a Python object to a JSON formatted string.",
}


@pytest.fixture(scope="module")
def miner() -> DualEncoderStudent:
    return DualEncoderStudent()


def _collection() -> Collection:
    docs = {k: Document(k, v, k) for k, v in TEXTS.items()}
    return Collection("minetiny", docs, {"d1": Query("d1", "how do I sort a list", "dev")}, Qrels({"d1": {"sort": 2}}))


def _read(doc_id: str) -> str:
    """What the models read of a document (title and text)."""
    return _collection().documents[doc_id].contents


def _example(scored: tuple[tuple[str, float], ...] = ()) -> DualExample:
    return DualExample("syn-sort", "how do I sort a list of numbers", "synthetic", ("sort",), ("dict",), scored)


def test_mined_negatives_exclude_positives_their_copies_and_teacher_answers(miner, tmp_path) -> None:
    collection = _collection()
    example = _example(scored=(("sort", 0.9), ("sort-key", 0.8), ("gc", 0.1)))
    no_positive = DualExample("q", "combine two dicts", "train", scored=(("dict", 0.7), ("gc", 0.2)))
    config = MiningConfig(depth=len(TEXTS), keep=len(TEXTS), margin=1.0)
    (mined_example, untouched), stats = mine_negatives([example, no_positive], collection, miner, tmp_path, config)
    assert untouched == no_positive
    mined = mined_example.mined
    assert "sort" not in mined and "sort-copy" not in mined and "sort-key" not in mined
    assert set(mined) == set(TEXTS) - {"sort", "sort-copy", "sort-key"}
    scores = miner.similarities([(example.query, _read(d)) for d in mined])
    assert list(scores) == sorted(scores, reverse=True)
    assert (stats.questions, stats.kept, stats.dropped_positive_text, stats.dropped_teacher) == (1, len(mined), 1, 1)
    assert stats.positive_in_top == 1


def test_margin_drops_negatives_scored_close_to_the_positive_and_keep_caps(miner, tmp_path) -> None:
    collection = _collection()
    example = _example()
    others = [d for d in TEXTS if d not in ("sort", "sort-copy")]
    scores = dict(zip(others, miner.similarities([(example.query, _read(d)) for d in others]), strict=True))
    positive = float(miner.similarities([(example.query, _read("sort"))])[0])
    margin = 0.8
    [mined], stats = mine_negatives([example], collection, miner, tmp_path, MiningConfig(depth=len(TEXTS),
                                                                                        keep=len(TEXTS), margin=margin))
    assert set(mined.mined) == {d for d, s in scores.items() if s <= margin * positive}
    assert stats.dropped_margin == sum(s > margin * positive for s in scores.values()) > 0
    [capped], _ = mine_negatives([example], collection, miner, tmp_path, MiningConfig(depth=3, keep=1, margin=1.0))
    assert len(capped.mined) == 1 and capped.mined[0] == max(scores, key=scores.get)


def test_mining_refuses_bad_settings_and_examples_without_positives(miner, tmp_path) -> None:
    with pytest.raises(R2RError, match="margin"):
        MiningConfig(margin=0.0)
    with pytest.raises(R2RError, match="depth >= 1"):
        MiningConfig(depth=0)
    with pytest.raises(R2RError, match="known positive"):
        mine_negatives([DualExample("q", "combine two dicts", "train", scored=(("dict", 0.7), ("gc", 0.2)))],
                       _collection(), miner, tmp_path, MiningConfig())
    with pytest.raises(R2RError, match="positives are not in"):
        mine_negatives([DualExample("q", "combine two dicts", "synthetic", ("no-such-doc",))],
                       _collection(), miner, tmp_path, MiningConfig())


def test_contrastive_batches_draw_mined_negatives_and_training_checks_them() -> None:
    collection = _collection()
    example = DualExample("syn-sort", "how do I sort a list", "synthetic", ("sort",), ("dict",), mined=("gc", "json"))
    config = DualTrainConfig(hard_negatives=0, mined_negatives=1)
    _, docs, positive, blocked = _contrastive_batch([example], collection, config, random.Random(0))
    assert docs[0] == _read("sort") and docs[1] in (_read("gc"), _read("json")) and len(docs) == 2
    both = DualTrainConfig(hard_negatives=1, mined_negatives=2)
    _, docs, _, _ = _contrastive_batch([example], collection, both, random.Random(0))
    assert sorted(docs[1:]) == sorted([_read("dict"), _read("gc"), _read("json")])
    assert positive.tolist() == [0] and not np.asarray(blocked)[0, 1:].any()
    unmined = DualExample("syn-sort", "how do I sort a list", "synthetic", ("sort",), ("dict",))
    with pytest.raises(R2RError, match="no example has dense negatives"):
        train_dual_encoder([unmined], collection, DualTrainConfig(steps=1, mined_negatives=1, progress=False),
                           "/nonexistent/never")
    unknown = DualExample("syn-sort", "how do I sort a list", "synthetic", ("sort",), mined=("nope",))
    with pytest.raises(R2RError, match="not in minetiny"):
        train_dual_encoder([unknown], collection, DualTrainConfig(steps=1, progress=False), "/nonexistent/never")
