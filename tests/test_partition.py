import numpy as np
import pytest

from fedssl.data.partition import partition

LABELS = np.repeat(np.arange(10), 600)


@pytest.mark.parametrize("scheme,kw", [("iid", {}), ("dirichlet", {"alpha": 0.5}), ("dirichlet", {"alpha": 0.05}),
                                       ("classes-per-client", {"classes_per_client": 2})])
@pytest.mark.parametrize("n", [1, 7, 10])
def test_every_sample_lands_in_exactly_one_partition(scheme, kw, n):
    parts = partition(LABELS, n, scheme, seed=3, **kw)
    assert len(parts) == n
    everything = np.concatenate(parts)
    assert len(np.unique(everything)) == len(everything)  # never twice
    if scheme == "classes-per-client" and n * kw["classes_per_client"] < 10:
        assert len(np.unique(LABELS[everything])) == n * kw["classes_per_client"]  # uncovered classes left out
    else:
        assert np.array_equal(np.sort(everything), np.arange(len(LABELS)))


def _classes_per_part(parts, threshold=0.05):
    return [int((np.bincount(LABELS[p], minlength=10) / max(len(p), 1) > threshold).sum()) for p in parts]


def test_dirichlet_skew_grows_as_alpha_shrinks():
    skewed = np.mean(_classes_per_part(partition(LABELS, 10, "dirichlet", alpha=0.1, seed=0)))
    balanced = np.mean(_classes_per_part(partition(LABELS, 10, "dirichlet", alpha=100.0, seed=0)))
    assert balanced == 10
    assert skewed < 5


def test_dirichlet_is_deterministic_per_seed():
    a = partition(LABELS, 5, "dirichlet", alpha=0.5, seed=1)
    b = partition(LABELS, 5, "dirichlet", alpha=0.5, seed=1)
    c = partition(LABELS, 5, "dirichlet", alpha=0.5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_classes_per_client_gives_each_client_k_classes():
    parts = partition(LABELS, 10, "classes-per-client", classes_per_client=3, seed=0)
    assert [len(np.unique(LABELS[p])) for p in parts] == [3] * 10


def test_unknown_scheme_and_zero_partitions_are_refused():
    with pytest.raises(ValueError, match="shards"):
        partition(LABELS, 3, "shards")
    with pytest.raises(ValueError, match="num-partitions"):
        partition(LABELS, 0, "iid")
