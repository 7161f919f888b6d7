"""Run outputs: the initial encoder is every task's first best model, replaced only by a better round."""

import numpy as np
import torch

from fedssl.checkpoint import load_encoder
from fedssl.config import RunConfig
from fedssl.round_record import RoundRecord
from fedssl.ssl import build_ssl_model
from fedssl.state import backbone_arrays
from server_app.outputs import RunOutputs


def test_a_round_worse_than_the_initial_encoder_never_replaces_it(tmp_path):
    cfg = RunConfig.from_flat({})
    torch.manual_seed(0)
    initial = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))
    trained = {k: (v + 0.1 if np.issubdtype(v.dtype, np.floating) else v) for k, v in initial.items()}
    outputs = RunOutputs(tmp_path, 7, cfg)
    outputs.record_initial(initial, {"fashion-mnist": 0.74, "digits": 0.94})
    record = RoundRecord(round=1, sampled=2, available=2, knn={"fashion-mnist": 0.80, "digits": 0.90})
    improved = outputs.record_round(record, trained, {})
    assert improved == ["fashion-mnist"]
    assert outputs.metrics["best"] == {"fashion-mnist": {"round": 1, "score": 0.80},
                                       "digits": {"round": 0, "score": 0.94}}
    _, digits_meta = load_encoder(tmp_path / "best" / "digits.pt")
    _, fashion_meta = load_encoder(tmp_path / "best" / "fashion-mnist.pt")
    assert digits_meta["round"] == 0 and fashion_meta["round"] == 1
    assert "digits: round 0 (0.9400)" in outputs.best_summary()
