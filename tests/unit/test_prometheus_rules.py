"""deploy/prometheus and deploy/grafana: valid for promtool, tested, and naming only metrics that exist."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from liaison.local import paths
from liaison.local.stack import SERVICES
from services.delegations.metrics import DelegationsMetrics
from services.registry.api import RegistryMetrics
from services.router.metrics import RouterMetrics
from tests.monitoring import (
    DASHBOARD,
    PROMETHEUS,
    alert_rules,
    broker_metric_names,
    dashboard_exprs,
    load_yaml,
    metric_names_in,
    panel_exprs,
    row_panels,
)

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}
# What prometheus-client exposes for a family, by type (the family name is given without `_total`).
METER_ATTRIBUTES = ("Count", "MeanRate", "OneMinuteRate", "FiveMinuteRate", "FifteenMinuteRate")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: run `make prereqs-prometheus` (apt-get install prometheus)",
                    pytrace=False)
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=120)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout}\n{result.stderr}"


def deadlines_metric_classes() -> list[type[Any]]:
    module = importlib.import_module("services.deadlines.metrics")
    return [cls for name, cls in inspect.getmembers(module, inspect.isclass)
            if name.endswith("Metrics") and cls.__module__ == module.__name__]


def exposed_names() -> set[str]:
    """Every sample name the services' metrics classes and the brokers' JMX exporter can expose."""
    registry = CollectorRegistry()
    RouterMetrics(registry)
    RegistryMetrics(registry)
    for cls in deadlines_metric_classes():
        cls(registry)
    DelegationsMetrics(registry)
    return {family.name + suffix for family in registry.collect()
            for suffix in SUFFIXES[family.type]} | set(exporter_names())


def exporter_config() -> dict[str, Any]:
    return dict(yaml.safe_load(paths.jmx_exporter_config().read_text()))


def mbean_attributes(object_name: str) -> tuple[str, ...]:
    """The numeric attributes of a Kafka MBean: a meter (`...PerSec`, the request handlers' idle
    share) has a count and rates, a gauge only a Value."""
    name = dict(part.split("=") for part in object_name.split(":", 1)[1].split(","))["name"]
    if name.endswith("PerSec") or name == "RequestHandlerAvgIdlePercent":
        return METER_ATTRIBUTES
    return ("Value",)


def exporter_names() -> dict[str, str]:
    """The metric names deploy/kafka/jmx-exporter.yaml makes of its MBeans, each with its MBean.

    As the exporter does: an attribute is written `domain<key=value, ...><>Attribute: value`, the
    first rule whose pattern matches it names the metric ($n from the pattern's groups), and an
    attribute no rule matches is not exported.
    """
    config = exporter_config()
    names: dict[str, str] = {}
    for object_name in config["includeObjectNames"]:
        domain, keys = object_name.split(":", 1)
        assert not set(keys) & {"*", "?"}, f"{object_name}: name each MBean, no patterns"
        bean = f"{domain}<{keys.replace(',', ', ')}>"
        for attribute in mbean_attributes(object_name):
            for rule in config["rules"]:
                match = re.fullmatch(f"^.*(?:{rule['pattern']}).*$", f"{bean}<>{attribute}: 0.0")
                if match:
                    name = re.sub(r"\$(\d+)", lambda m, g=match: g.group(int(m.group(1))), rule["name"])
                    name = name.lower() if config["lowercaseOutputName"] else name
                    names[re.sub(r"[^a-zA-Z0-9:_]", "_", name)] = object_name
                    break
    return names


def test_promtool_accepts_the_alerting_rules() -> None:
    """`promtool check rules` finds the rules well-formed."""
    assert_ok(promtool("check", "rules", PROMETHEUS / "alerts.yml"))


def test_alerting_rules_pass_their_unit_tests() -> None:
    """`promtool test rules`: each alert fires when it should and stays quiet when it should not."""
    assert_ok(promtool("test", "rules", PROMETHEUS / "alerts_test.yml"))


def test_promtool_accepts_the_prometheus_config() -> None:
    """`promtool check config` accepts the scrape config and the rule file it loads."""
    assert_ok(promtool("check", "config", PROMETHEUS / "prometheus.yml"))
    assert load_yaml("prometheus.yml")["rule_files"] == ["alerts.yml"]


def test_prometheus_scrapes_every_local_service_on_its_metrics_port() -> None:
    """One job per service of `make up`, named liaison-<service>, at the port the stack gives it."""
    jobs = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
            for job in load_yaml("prometheus.yml")["scrape_configs"]}
    expected = {f"liaison-{spec.name}": [f"127.0.0.1:{spec.metrics_port}"] for spec in SERVICES}
    expected.setdefault("liaison-deadlines", ["127.0.0.1:9183"])
    brokers = jobs.pop("kafka")
    assert jobs == expected
    assert brokers
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", target) for target in brokers)


def test_every_alert_says_what_it_means_and_what_to_do() -> None:
    """Each alert has a severity, a one-line summary and a description long enough to act on."""
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"].split()) >= 25, rule["alert"]


def test_the_brief_alerts_are_all_there() -> None:
    """Dead letters, lag, overdue queries, denial spikes and a service down each have an alert."""
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    assert "liaison_router_dead_letters_total" in exprs["LiaisonDeadLettersRising"]
    assert "liaison_router_consumer_lag" in exprs["LiaisonRouterLagHigh"]
    assert "liaison_deadlines_overdue_queries" in exprs["LiaisonQueriesOverdue"]
    assert "liaison_router_denials_total" in exprs["LiaisonDenialSpike"]
    assert exprs["LiaisonServiceDown"].startswith("up{")


def test_the_broker_alerts_are_all_there() -> None:
    """Partitions under-replicated, under min ISR or offline; no controller; ISR shrinks; a broker down."""
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    assert "kafka_server_replicamanager_underreplicatedpartitions" in exprs["KafkaUnderReplicatedPartitions"]
    assert "kafka_server_replicamanager_underminisrpartitioncount" in exprs["KafkaUnderMinIsrPartitions"]
    assert "kafka_controller_kafkacontroller_offlinepartitionscount" in exprs["KafkaOfflinePartitions"]
    assert "kafka_controller_kafkacontroller_activecontrollercount" in exprs["KafkaNoActiveController"]
    assert exprs["KafkaNoActiveController"].endswith("!= 1")  # none, or a split quorum
    assert "kafka_server_replicamanager_isrshrinks_total" in exprs["KafkaIsrShrinking"]
    assert exprs["KafkaBrokerDown"] == 'up{job="kafka"} == 0'


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    """alerts_test.yml expects each alert at least once, and at least once expects it silent."""
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml("alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fired == set(), "alerts never expected to fire"
    assert names - quiet == set(), "alerts never expected to stay quiet"


def test_alerts_read_only_metrics_the_services_expose() -> None:
    """A renamed metric would silently disable an alert; every name in an expression must exist."""
    exposed = exposed_names()
    for rule in alert_rules():
        used = metric_names_in(rule["expr"])
        assert used or "up{" in rule["expr"], rule["alert"]
        assert used <= exposed, f"{rule['alert']} reads unknown metrics: {sorted(used - exposed)}"


def test_dashboard_reads_only_metrics_the_services_expose() -> None:
    """Every panel query of the Grafana dashboard names metrics that exist."""
    exposed = exposed_names()
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        unknown = metric_names_in(expr) - exposed
        assert not unknown, f"{expr} reads unknown metrics: {sorted(unknown)}"


def test_dashboard_shows_what_operators_watch() -> None:
    """Traffic, latency, denials, dead letters, lag, open and overdue queries, time to reply."""
    used = set().union(*(metric_names_in(e) for e in dashboard_exprs()))
    assert {
        "liaison_router_messages_total", "liaison_router_latency_seconds_bucket",
        "liaison_router_denials_total", "liaison_router_dead_letters_total",
        "liaison_router_consumer_lag", "liaison_deadlines_open_queries",
        "liaison_deadlines_overdue_queries", "liaison_deadlines_time_to_reply_seconds_bucket",
    } <= used


def test_dashboard_shows_the_brokers() -> None:
    """A Brokers row: partitions at risk, the active controller, ISR changes, traffic per broker."""
    row = panel_exprs(row_panels("Brokers"))
    used = set().union(*(metric_names_in(e) for e in row))
    assert {
        "kafka_server_replicamanager_underreplicatedpartitions",
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "kafka_controller_kafkacontroller_activecontrollercount",
        "kafka_server_replicamanager_isrshrinks_total", "kafka_server_replicamanager_isrexpands_total",
        "kafka_server_brokertopicmetrics_messagesin_total",
    } <= used
    assert any("by (instance)" in e and "messagesin" in e for e in row)  # per broker


def test_exporter_serves_what_alerts_and_dashboard_read_and_nothing_unused() -> None:
    """Every kafka_* name of the rules and the dashboard is one the exporter config makes, and every
    MBean it reads feeds one of them (so a scrape reads no MBean for nothing)."""
    produced = exporter_names()
    used = broker_metric_names()
    assert used <= produced.keys(), f"not exported: {sorted(used - produced.keys())}"
    assert set(exporter_config()["includeObjectNames"]) == {produced[name] for name in used}


def test_the_exporter_config_names_the_metrics_alerts_need() -> None:
    """The exporter makes these names of Kafka 4's KRaft MBeans (checked on a real broker too)."""
    produced = exporter_names()
    assert produced["kafka_server_replicamanager_underreplicatedpartitions"] == \
        "kafka.server:type=ReplicaManager,name=UnderReplicatedPartitions"
    assert produced["kafka_controller_kafkacontroller_activecontrollercount"] == \
        "kafka.controller:type=KafkaController,name=ActiveControllerCount"
    assert produced["kafka_controller_kafkacontroller_offlinepartitionscount"] == \
        "kafka.controller:type=KafkaController,name=OfflinePartitionsCount"
    assert produced["kafka_server_replicamanager_isrshrinks_total"] == \
        "kafka.server:type=ReplicaManager,name=IsrShrinksPerSec"
    assert "kafka_server_replicamanager_isrshrinkspersec" not in produced  # its rates are not read


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query (Grafana's variables replaced by durations)."""
    rules = []
    for i, panel_query in enumerate(dashboard_exprs()):
        expr = panel_query
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, panel_query
        rules.append({"record": f"dashboard:panel_query:{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert_ok(promtool("check", "rules", path))


def test_dashboard_is_importable() -> None:
    """A stable uid, unique panel ids, and every query on the selectable Prometheus data source."""
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "liaison-bus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
    for panel in board["panels"]:
        assert panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
