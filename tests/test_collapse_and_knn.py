
import numpy as np
import pytest
import torch

from fedssl.augment import normalization
from fedssl.collapse import rankme, z_std
from fedssl.knn import knn_top1


@pytest.mark.parametrize("d", [16, 128])
def test_z_std_is_one_for_isotropic_and_zero_for_collapsed(d):
    g = torch.Generator().manual_seed(0)
    assert z_std(torch.randn(4096, d, generator=g)) == pytest.approx(1.0, abs=0.05)
    constant = torch.ones(256, d) * torch.randn(1, d, generator=g)
    assert z_std(constant) == pytest.approx(0.0, abs=1e-5)


def test_rankme_counts_the_effective_dimensions():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(2048, 32, generator=g)
    low = torch.randn(2048, 4, generator=g) @ torch.randn(4, 32, generator=g)
    assert rankme(full) > 28
    assert 2.5 < rankme(low) <= 4.01
    assert rankme(torch.ones(64, 32)) == pytest.approx(1.0, abs=0.01)


def test_collapse_metrics_reject_bad_shapes():
    with pytest.raises(ValueError):
        z_std(torch.randn(10))
    with pytest.raises(ValueError):
        rankme(torch.randn(1, 8))


def test_knn_separates_clusters_and_is_at_chance_on_noise():
    g = torch.Generator().manual_seed(0)
    centres = 10 * torch.randn(5, 16, generator=g)
    labels = torch.arange(5).repeat_interleave(100)
    points = centres[labels] + torch.randn(500, 16, generator=g)
    assert knn_top1(points[::2], labels[::2], points[1::2], labels[1::2], k=20, t=0.1) == 1.0
    noise = torch.randn(2000, 16, generator=g)
    random_labels = torch.randint(0, 5, (2000,), generator=g)
    acc = knn_top1(noise[:1000], random_labels[:1000], noise[1000:], random_labels[1000:], k=20)
    assert abs(acc - 0.2) < 0.06



def _unit(degrees: list[float]) -> torch.Tensor:
    """2-D unit vectors at these angles: cosine order is angle order."""
    a = torch.tensor(degrees, dtype=torch.float64).deg2rad()
    return torch.stack([a.cos(), a.sin()], dim=1).float()


def test_retrieval_top5_counts_a_hit_anywhere_in_the_five_nearest_and_top1_only_the_nearest():
    from fedssl.knn import retrieval_top_k

    # query 0 (label 0): its nearest four are label 1, the fifth is label 0 -> top-1 miss, top-5 hit
    # query 1 (label 2): its nearest is label 2 -> hit at both
    # query 2 (label 3): no label-3 item in the gallery -> miss at both
    gallery = _unit([1, 2, 3, 4, 5, 100, 181, 182, 183])
    gallery_labels = torch.tensor([1, 1, 1, 1, 0, 2, 0, 0, 0])  # no label 3 at all
    queries, query_labels = _unit([0, 99, 270]), torch.tensor([0, 2, 3])
    assert retrieval_top_k(gallery, gallery_labels, queries, query_labels, k=1) == pytest.approx(1 / 3)
    assert retrieval_top_k(gallery, gallery_labels, queries, query_labels, k=4) == pytest.approx(1 / 3)
    assert retrieval_top_k(gallery, gallery_labels, queries, query_labels, k=5) == pytest.approx(2 / 3)
    # exact cosine: a length does not matter, and k is capped at the gallery (every query with a match hits)
    assert retrieval_top_k(7 * gallery, gallery_labels, queries * 0.1, query_labels, k=5) == pytest.approx(2 / 3)
    assert retrieval_top_k(gallery, gallery_labels, queries, query_labels, k=50) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="k = 0"):
        retrieval_top_k(gallery, gallery_labels, queries, query_labels, k=0)


@pytest.mark.parametrize("k", [1, 5])
def test_retrieval_top_k_agrees_with_a_brute_force_count_and_top1_with_the_device_search(k):
    from export.retrieve.search import top1_label_agreement
    from fedssl.knn import retrieval_top_k

    g = torch.Generator().manual_seed(k)
    gallery, queries = torch.randn(300, 8, generator=g), torch.randn(150, 8, generator=g)
    gallery_labels, query_labels = torch.randint(0, 6, (300,), generator=g), torch.randint(0, 6, (150,), generator=g)
    sim = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T
    order = sim.argsort(dim=1, descending=True)[:, :k]
    expected = sum(int(query_labels[i]) in gallery_labels[order[i]].tolist() for i in range(150)) / 150
    chunked = retrieval_top_k(gallery, gallery_labels, queries, query_labels, k=k, chunk=7)
    assert chunked == pytest.approx(expected) == pytest.approx(
        retrieval_top_k(gallery, gallery_labels, queries, query_labels, k=k))
    if k == 1:
        assert chunked == pytest.approx(top1_label_agreement(gallery.numpy(), gallery_labels.numpy(),
                                                             queries.numpy(), query_labels.numpy()))

class _Offset(torch.nn.Module):
    """Flattened pixels plus a constant shared by every embedding (a bias no class information lives in)."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) + self.offset


def test_the_probe_scores_what_retrieval_sees_and_keeps_the_centred_figure_as_a_secondary_line():
    from fedssl.config import EvalConfig, ModelConfig
    from fedssl.probe import ProbeTask, evaluate_pixels, probe_backbone

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    centres = rng.integers(60, 200, (4, 1, 6, 6))
    images = np.clip(centres[labels] + rng.normal(0, 120, (400, 1, 6, 6)), 0, 255).astype(np.uint8)
    task = ProbeTask("toy", images[:300], labels[:300], images[300:], labels[300:])
    cfg, model = EvalConfig(knn_k=20), ModelConfig(image_size=6)
    plain = probe_backbone(_Offset(0.0), [task], model, cfg, linear=False)
    shifted = probe_backbone(_Offset(2.0), [task], model, cfg, linear=False)
    # the selection score is exact cosine kNN of the embeddings as they are (a device's retrieval)
    m, s = normalization(1)
    g = (torch.from_numpy(task.gallery).float() / 255 - m[0]) / s[0]
    q = (torch.from_numpy(task.queries).float() / 255 - m[0]) / s[0]
    expected = knn_top1(g.flatten(1), torch.from_numpy(task.gallery_labels), q.flatten(1),
                        torch.from_numpy(task.query_labels), k=20, t=cfg.knn_t)
    assert plain.knn["toy"] == pytest.approx(expected) and plain.knn["toy"] > 0.5  # chance is 0.25
    # a shared offset changes what retrieval finds; only the centred secondary figure ignores it
    assert shifted.knn["toy"] != pytest.approx(plain.knn["toy"])
    assert shifted.knn_centred["toy"] == pytest.approx(plain.knn_centred["toy"])
    # pixels are scored the same way: flattened pixels in [0, 1], not centred
    pixels = torch.from_numpy(images.reshape(400, -1)).float() / 255
    assert evaluate_pixels([task], cfg)["toy"] == pytest.approx(knn_top1(
        pixels[:300], torch.from_numpy(labels[:300]), pixels[300:], torch.from_numpy(labels[300:]), k=20, t=cfg.knn_t))


def test_a_collapse_to_a_point_plus_a_small_spread_scores_low_although_centring_would_rescue_it():
    from fedssl.config import EvalConfig
    from fedssl.probe import ProbeTask, centred_knn_top1, retrieval_knn_top1

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (1500,), generator=g)
    spread = torch.randn(5, 32, generator=g)[labels] + 0.5 * torch.randn(1500, 32, generator=g)  # class structure
    # every embedding ~ the same point: in float32 (as on a device) their cosines are all 1 to rounding
    z = 100.0 * torch.ones(1, 32) + 1e-3 * spread
    task = ProbeTask("toy", np.zeros(1000), labels[:1000].numpy(), np.zeros(500), labels[1000:].numpy())
    cfg = EvalConfig(knn_k=20)
    assert centred_knn_top1(z[:1000], z[1000:], task, cfg) > 0.8
    assert retrieval_knn_top1(z[:1000], z[1000:], task, cfg) < 0.4  # chance is 0.2