import pytest
import torch

from fedssl.checkpoint import load_encoder, save_encoder
from fedssl.config import ModelConfig
from fedssl.models import build_encoder


@pytest.mark.parametrize("cfg,shape", [
    (ModelConfig(encoder="smallcnn", in_channels=1, image_size=28, embedding_dim=64, readout="pool"), (2, 1, 28, 28)),
    (ModelConfig(encoder="smallcnn", in_channels=1, image_size=28, embedding_dim=1152), (2, 1, 28, 28)),
    (ModelConfig(encoder="smallcnn", in_channels=3, image_size=32, embedding_dim=2048), (2, 3, 32, 32)),
    (ModelConfig(encoder="resnet18", in_channels=1, embedding_dim=512, small_stem=True), (2, 1, 28, 28)),
    (ModelConfig(encoder="resnet18", in_channels=3, embedding_dim=256, small_stem=False), (2, 3, 64, 64)),
])
def test_encoders_map_images_to_the_configured_embedding(cfg, shape):
    encoder = build_encoder(cfg).eval()
    assert encoder(torch.rand(shape)).shape == (shape[0], cfg.embedding_dim)


def test_small_stem_keeps_resolution_for_small_images():
    small = build_encoder(ModelConfig(encoder="resnet18", in_channels=3, small_stem=True))
    imagenet = build_encoder(ModelConfig(encoder="resnet18", in_channels=3, small_stem=False))
    assert small.net.conv1.kernel_size == (3, 3) and small.net.conv1.stride == (1, 1)
    assert imagenet.net.conv1.kernel_size == (7, 7)


def test_checkpoint_round_trip_and_clear_errors(tmp_path):
    cfg = ModelConfig(embedding_dim=32)
    encoder = build_encoder(cfg).eval()
    save_encoder(tmp_path / "e.pt", encoder.state_dict(), cfg, run_id="r", round=3)
    loaded, meta = load_encoder(tmp_path / "e.pt")
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), encoder(x))
    assert meta["round"] == 3 and meta["input"]["mean"] == [0.286] and meta["embedding_dim"] == 32
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_encoder(tmp_path / "junk.pt")


@pytest.mark.parametrize("readout,layers,dim", [("block3", 6, 1152), ("block2", 4, 3136)])
def test_a_block_readout_embeds_the_standardised_map_and_trains_on_block4(readout, layers, dim):
    cfg = ModelConfig(readout=readout, embedding_dim=dim)
    encoder = build_encoder(cfg)
    x = torch.rand(6, 1, 28, 28)
    encoder.train()
    assert encoder.ssl_features(x).shape == (6, 256 * 9)  # heads sit on block 4's map
    assert encoder.standardize.num_batches_tracked == 1  # the embedding's statistics follow training
    encoder.eval()
    z = encoder(x)
    expected = encoder.features[:layers](x).flatten(1)  # after that block's max-pool
    mean, var = encoder.standardize.running_mean, encoder.standardize.running_var
    torch.testing.assert_close(z, (expected - mean) / torch.sqrt(var + encoder.standardize.eps))
    assert z.shape == (6, dim)


def test_block3_readout_needs_the_matching_embedding_dim():
    from fedssl.config import RunConfig

    with pytest.raises(ValueError, match="must be 1152"):
        RunConfig.from_flat({"model.readout": "block3", "model.embedding-dim": 128})
    with pytest.raises(ValueError, match="must be 2048"):
        RunConfig.from_flat({"model.readout": "block3", "model.embedding-dim": 128, "model.image-size": 32})
    with pytest.raises(ValueError, match="smallcnn"):
        RunConfig.from_flat({"model.readout": "block3", "model.embedding-dim": 1152, "model.encoder": "resnet18"})
    with pytest.raises(ValueError, match="'block2' at image input 28x28: it must be 3136"):
        RunConfig.from_flat({"model.readout": "block2", "model.embedding-dim": 1152})
