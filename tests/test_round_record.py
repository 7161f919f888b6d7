"""The typed round record: what metrics.json stores per round, and how it is read back."""

from __future__ import annotations

import json
import math

import pytest

from fedssl.round_record import Exclusion, RoundRecord
from fedssl.summary import summarize

TRAINED = RoundRecord(round=3, sampled=4, available=5, replied=4, failed=0, accepted=3,
                      excluded=(Exclusion(node_id=9, partition_id=2.0, reason="collapse", detail="z_std 0.01 < 0.1"),),
                      loss=1.25, num_examples=300.0,
                      clients=tuple({"node_id": n, "num-examples": 100.0, "loss": 1.25} for n in (1, 2, 3, 9)),
                      bytes_received=4000, aggregation_seconds=0.25)


def test_evaluation_adds_scores_to_a_new_record_and_leaves_the_trained_one_alone():
    record = TRAINED.evaluated({"digits": 0.8}, {"digits": 0.82}, {}, eval_seconds=1.5, seconds=9.0)
    assert (record.knn, record.knn_report, record.eval_seconds, record.seconds) == ({"digits": 0.8},
                                                                                  {"digits": 0.82}, 1.5, 9.0)
    assert TRAINED.knn == {} and record.excluded == TRAINED.excluded and record.round == 3


def test_metrics_json_round_trip_keeps_every_field():
    record = TRAINED.evaluated({"digits": 0.8}, {"digits": 0.82}, {"digits": 0.9}, eval_seconds=1.5, seconds=9.0)
    stored = json.loads(json.dumps(record.to_dict()))
    assert stored["excluded"] == [{"node_id": 9, "partition_id": 2.0, "reason": "collapse",
                                   "detail": "z_std 0.01 < 0.1"}]
    assert stored["clients"][0] == {"node_id": 1, "num-examples": 100.0, "loss": 1.25}
    assert RoundRecord.from_dict(stored) == record


def test_a_round_written_before_the_record_had_a_type_still_reads():
    old = {"round": 1, "sampled": 2, "available": 2, "replied": 2, "failed": 0, "accepted": 2, "excluded": [],
           "loss": 2.0, "num_examples": 200, "clients": [], "bytes_received": 10, "aggregation_seconds": 0.1,
           "knn": {"fashion-mnist": 0.7}, "eval_seconds": 1.0, "seconds": 5.0, "a-later-key": 1}
    record = RoundRecord.from_dict(old)
    assert record.knn == {"fashion-mnist": 0.7} and record.knn_report == {} and record.linear == {}
    with pytest.raises(ValueError, match="round"):
        RoundRecord.from_dict({"sampled": 1, "available": 1})


def test_the_console_summary_reads_the_records():
    record = TRAINED.evaluated({"digits": 0.8}, {"digits": 0.82}, {"digits": 0.9}, eval_seconds=1.5, seconds=9.0)
    metrics = {"run_id": "7", "status": "completed", "rounds": [record.to_dict()],
               "baselines": {"raw-pixels": {"digits": 0.95}}, "best": {"digits": {"round": 3, "score": 0.8}}}
    text = summarize(metrics)
    assert "run 7: completed, 1 rounds" in text and "0.8000" in text and "0.9500" in text
    assert "best digits: 0.8000 at round 3" in text
    assert math.isnan(RoundRecord(round=1, sampled=0, available=0).loss)


def test_retrieval_top5_is_stored_read_back_and_summarised_only_where_a_run_scored_it():
    video = TRAINED.evaluated({"video-motion": 0.5}, {"video-motion": 0.45}, {}, eval_seconds=1.0, seconds=2.0,
                              retrieval_top5={"video-motion": 0.75})
    stored = json.loads(json.dumps(video.to_dict()))
    assert stored["retrieval_top5"] == {"video-motion": 0.75} and RoundRecord.from_dict(stored) == video
    metrics = {"run_id": "8", "status": "completed", "rounds": [stored], "best": {},
               "baselines": {"raw-pixels": {"video-motion": 0.4}},
               "baseline_probes": {"raw-pixels": {"knn": {"video-motion": 0.4},
                                                  "retrieval_top5": {"video-motion": 0.6}}}}
    header, federated, raw = summarize(metrics).splitlines()[1:4]
    assert header.split()[-1] == "top-5"
    assert federated.split()[-1] == "0.7500" and raw.split()[-1] == "0.6000"
    image = TRAINED.evaluated({"digits": 0.8}, {"digits": 0.82}, {}, eval_seconds=1.0, seconds=2.0)
    assert image.retrieval_top5 == {}
    assert "top-5" not in summarize({**metrics, "rounds": [image.to_dict()], "baseline_probes": {}})
