"""The fedssl Grafana dashboard, built with Grafana's own SDK (grafana-foundation-sdk).

Regenerate the committed JSON after editing:
    python docker/monitoring/grafana/fedssl_dashboard.py          # writes dashboards/fedssl.json
    python docker/monitoring/grafana/fedssl_dashboard.py --check  # exit 1 if the JSON is stale

Every query selects ``instance=~"$instance"`` (one ServerApp exporter per run) and the
per-device ones ``device=~"$device"``; docs/monitoring.md describes each panel.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, heatmap, stat, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, StackingConfig, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    BigValueTextMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).parent / "dashboards" / "fedssl.json"
UID = "fedssl"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RUN = 'instance=~"$instance"'
DEV = 'instance=~"$instance", device=~"$device"'


def query(expr: str, legend: str = "", fmt: PromQueryFormat | None = None) -> Dataquery:
    q = Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DS)
    return q.format(fmt) if fmt else q


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=v, color=c) for v, c in steps])


def lettered(targets: tuple[Dataquery, ...]) -> list[Dataquery]:
    return [t.ref_id(chr(ord("A") + i)) for i, t in enumerate(targets)]


def series(title: str, description: str, unit: str, *targets: Dataquery, bars: bool = False,
           stacked: bool = False, width: int = 12) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DS)
             .height(8).span(width).targets(lettered(targets))
             .legend(VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST)
                     .placement(LegendPlacement.BOTTOM)))
    if bars:
        panel = panel.draw_style(GraphDrawStyle.BARS).fill_opacity(80)
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL))
    return panel


def single(title: str, description: str, unit: str, *targets: Dataquery, width: int = 6, height: int = 4,
           steps: ThresholdsConfig | None = None, text_mode: BigValueTextMode = BigValueTextMode.VALUE_AND_NAME
           ) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).unit(unit).datasource(DS).height(height)
             .span(width).targets(lettered(targets)).graph_mode(BigValueGraphMode.NONE).text_mode(text_mode)
             .reduce_options(ReduceDataOptions().calcs(["lastNotNull"])))
    return panel.thresholds(steps) if steps else panel


def bars(title: str, description: str, unit: str, target: Dataquery, width: int = 12,
         steps: ThresholdsConfig | None = None) -> bargauge.Panel:
    panel = (bargauge.Panel().title(title).description(description).unit(unit).datasource(DS).height(8)
             .span(width).with_target(target.instant().ref_id("A"))
             .reduce_options(ReduceDataOptions().calcs(["lastNotNull"])))
    return panel.thresholds(steps) if steps else panel


def distribution(title: str, description: str, metric: str, width: int = 12) -> heatmap.Panel:
    target = query(f'sum by (le) (increase({metric}_bucket{{{RUN}}}[$__rate_interval]))', "{{le}}",
                   PromQueryFormat.HEATMAP).ref_id("A")
    return (heatmap.Panel().title(title).description(description).datasource(DS).height(8).span(width)
            .with_target(target).calculate(False))


def progress() -> list:
    return [
        single("Round", "Last completed round and rounds planned for the run.", "none",
               query(f"fedssl_round{{{RUN}}}", "completed"), query(f"fedssl_rounds_planned{{{RUN}}}", "planned")),
        single("Since last round", "Time since the last round ended (since the start before round 1). "
               "The FedSSLRoundStalled alert fires at 30 minutes.", "s",
               query(f"time() - fedssl_last_round_timestamp_seconds{{{RUN}}}", "since last round"),
               steps=thresholds((None, "green"), (600, "yellow"), (1800, "red")), text_mode=BigValueTextMode.VALUE),
        single("Run", "SSL method, aggregation rule, encoder and Flower run id.", "none",
               query(f"fedssl_run_info{{{RUN}}}", "{{ssl_method}} / {{aggregation}} / {{encoder}} / run {{run_id}}"),
               width=12, text_mode=BigValueTextMode.NAME),
        series("Round duration", "Wall time of each round, and the parts spent aggregating the updates and "
               "scoring the kNN probes (the rest is local training and transfer).", "s",
               query(f"fedssl_round_duration_seconds{{{RUN}}}", "round"),
               query(f"fedssl_aggregation_duration_seconds{{{RUN}}}", "aggregation"),
               query(f"fedssl_evaluation_duration_seconds{{{RUN}}}", "kNN evaluation"), width=24),
    ]


def fleet() -> list:
    return [
        series("Nodes per round", "Nodes connected when the round began, sampled for it, replies received, "
               "accepted into the aggregate, and sampled nodes without a reply.", "none",
               query(f"fedssl_round_nodes_available{{{RUN}}}", "available"),
               query(f"fedssl_round_nodes_sampled{{{RUN}}}", "sampled"),
               query(f"fedssl_round_replies{{{RUN}}}", "replied"),
               query(f"fedssl_round_replies_accepted{{{RUN}}}", "accepted"),
               query(f"fedssl_round_replies_failed{{{RUN}}}", "failed")),
        series("Replies excluded per round, by reason", "Replies the server refused in the last round: collapse, "
               "nan, norm, shape, dtype, missing-keys, extra-keys, metrics, skipped, bounds, claims, direction, "
               "error.", "none",
               query(f"sum by (reason) (fedssl_round_replies_excluded{{{RUN}}})", "{{reason}}"),
               bars=True, stacked=True),
        bars("Rounds since each device last replied", "0 for the devices of the last round; a growing bar is a "
             "device that dropped out (FedSSLDeviceSilent fires at 5).", "none",
             query(f"fedssl_round{{{RUN}}} - on(job, instance) group_right fedssl_device_last_round{{{DEV}}}",
                   "{{device}}"),
             steps=thresholds((None, "green"), (1, "yellow"), (5, "red"))),
        bars("Excluded replies per device", "Replies of each device excluded since the run started, by reason.",
             "none", query(f"sum by (device, reason) (fedssl_device_excluded_total{{{DEV}}})",
                           "{{device}} {{reason}}"),
             width=8, steps=thresholds((None, "green"), (1, "red"))),
        single("Replies beyond the device label cap", "Replies from devices that got no device label "
               "(FEDSSL_METRICS_MAX_DEVICES); they still count in every fleet figure.", "none",
               query(f"fedssl_device_replies_unlabelled_total{{{RUN}}}", "unlabelled"),
               width=4, height=8, text_mode=BigValueTextMode.VALUE),
    ]


def learning() -> list:
    return [
        series("Aggregated SSL loss", "Local SSL loss of the accepted replies, weighted by their examples. "
               "Comparable within a run, not across SSL methods.", "none",
               query(f"fedssl_round_loss{{{RUN}}}", "loss"), width=8),
        series("kNN top-1 per probe task", "Accuracy of a kNN classifier on the global encoder's embeddings per "
               "probe task, the best so far, and the raw-pixel and random-init baselines the encoder has to "
               "beat.", "percentunit",
               query(f"fedssl_knn_top1{{{RUN}}}", "{{task}}"),
               query(f"fedssl_knn_best_top1{{{RUN}}}", "{{task}} best"),
               query(f"fedssl_knn_baseline_top1{{{RUN}}}", "{{task}} {{baseline}}"), width=16),
        single("Best kNN top-1", "Best kNN top-1 per task so far; its encoder is saved as best/<task>.pt.",
               "percentunit", query(f"fedssl_knn_best_top1{{{RUN}}}", "{{task}}"), width=4, height=8),
        single("Best round", "Round of the best kNN top-1 per task.", "none",
               query(f"fedssl_knn_best_round{{{RUN}}}", "{{task}}"), width=4, height=8),
        series("Global model norm", "L2 norm of the global backbone after each round: a jump is a bad update "
               "that got through, a slow drift is normal.", "none",
               query(f"fedssl_global_model_norm{{{RUN}}}", "norm"), width=6),
        series("Received per round", "Bytes of model arrays received in each round.", "bytes",
               query(f"fedssl_round_received_bytes{{{RUN}}}", "received"), width=5),
        series("Examples per round", "Training examples behind the accepted updates of each round.", "none",
               query(f"fedssl_round_examples{{{RUN}}}", "examples"), width=5),
    ]


def collapse() -> list:
    return [
        distribution("Client z-std distribution", "Per-reply embedding std x sqrt(dim) across the fleet "
                     "(1 healthy, 0 collapsed): replies per bucket.", "fedssl_client_z_std"),
        distribution("Client RankMe distribution", "Per-reply effective rank of the embeddings across the fleet "
                     "(1 collapsed): replies per bucket.", "fedssl_client_rankme"),
        series("z-std per device", "Embedding std x sqrt(dim) on each device's own images (1 healthy, "
               "0 collapsed).", "none", query(f"fedssl_device_z_std{{{DEV}}}", "{{device}}")),
        series("RankMe per device", "Effective rank of each device's embeddings (1 collapsed).", "none",
               query(f"fedssl_device_rankme{{{DEV}}}", "{{device}}")),
    ]


def devices() -> list:
    return [
        series("Local loss per device", "SSL loss of each device's last local training.", "none",
               query(f"fedssl_device_loss{{{DEV}}}", "{{device}}"), width=6),
        series("Throughput per device", "Training examples per second on each device.", "none",
               query(f"fedssl_device_examples_per_second{{{DEV}}}", "{{device}}"), width=6),
        series("Local training time per device", "Seconds each device spent training in its last round.", "s",
               query(f"fedssl_device_train_duration_seconds{{{DEV}}}", "{{device}}"), width=6),
        series("Peak memory per device", "Peak resident memory of each device's ClientApp.", "bytes",
               query(f"fedssl_device_peak_memory_bytes{{{DEV}}}", "{{device}}"), width=6),
        series("Batch size each device chose", "train.batch-size capped by what fits in device.memory-fraction "
               "of the device's memory (fedssl.local_settings).", "none",
               query(f"fedssl_device_batch_size{{{DEV}}}", "{{device}}")),
        series("Precision and threads per device", "Bits of the arithmetic each device trained in (32 fp32, "
               "16 bf16/fp16 autocast) and its torch threads.", "none",
               query(f"fedssl_device_precision_bits{{{DEV}}}", "{{device}} bits"),
               query(f"fedssl_device_threads{{{DEV}}}", "{{device}} threads")),
    ]


def split() -> list:
    return [
        series("Split steps per second", "mode = split: server steps per second over the last evaluation window "
               "(two message round trips to every device per step).", "none",
               query(f"fedssl_split_steps_per_second{{{RUN}}}", "steps/s"), width=6),
        series("Split bytes per step", "mode = split: mean bytes per step; up: the devices' activations, down: "
               "gradient slices and the stems at a period's start.", "bytes",
               query(f"fedssl_split_bytes_per_step{{{RUN}}}", "{{direction}}"), width=6),
        series("Split queue fill", "mode = split: fraction of the server's MoCo queue holding real keys.",
               "percentunit", query(f"fedssl_split_queue_fill{{{RUN}}}", "fill"), width=6),
        series("Split devices per step", "mode = split: mean devices whose activations entered a step.", "none",
               query(f"fedssl_split_devices_per_step{{{RUN}}}", "devices"), width=6),
    ]


ROWS = (("Run progress", progress), ("Fleet", fleet), ("Learning", learning),
        ("Representation collapse", collapse), ("Devices", devices), ("Split learning (mode = split)", split))


def build() -> dict:
    """The dashboard as Grafana's JSON model."""
    dashboard = (
        Dashboard("fedssl: federated self-supervised learning").uid(UID)
        .description("Rounds, fleet, exclusions, collapse and kNN of a fedssl run (server_app/metrics_exporter.py)")
        .tags(["fedssl", "flower"]).refresh("30s").time("now-6h", "now").timezone("browser").editable()
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(QueryVariable("instance").label("ServerApp").datasource(DS)
                       .query("label_values(fedssl_round, instance)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                       .sort(VariableSort.ALPHABETICAL_ASC).include_all(True).all_value(".*"))
        .with_variable(QueryVariable("device").label("Device").datasource(DS)
                       .query('label_values(fedssl_device_last_round{instance=~"$instance"}, device)')
                       .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.NATURAL_ASC)
                       .multi(True).include_all(True).all_value(".*"))
    )
    panel_id = 0
    for title, panels in ROWS:  # an open row, then its panels: what Grafana saves for expanded rows
        panel_id += 1
        dashboard = dashboard.with_row(Row(title).collapsed(False).id(panel_id))
        for panel in panels():
            panel_id += 1
            dashboard = dashboard.with_panel(panel.id(panel_id))
    return json.loads(JSONEncoder(sort_keys=True, indent=2).encode(dashboard.build()))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        stale = not OUT.is_file() or OUT.read_text() != text
        print(f"{OUT} is {'stale: regenerate it' if stale else 'up to date'}")
        return int(stale)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
