"""Readers of deploy/prometheus and deploy/grafana: alert rules, panel queries, the metrics they name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from liaison.local.paths import REPO_ROOT

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "liaison.json"
# Every bus metric starts with liaison_, every broker metric of deploy/kafka/jmx-exporter.yaml with kafka_.
METRIC_NAME = re.compile(r"\b(?:liaison|kafka)_[a-z0-9_]+\b")


def load_yaml(name: str, folder: Path = PROMETHEUS) -> Any:
    return yaml.safe_load((folder / name).read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml("alerts.yml")["groups"] for rule in group["rules"]
            if "alert" in rule]


def dashboard_panels() -> list[dict[str, Any]]:
    return list(json.loads(DASHBOARD.read_text())["panels"])


def panel_exprs(panels: list[dict[str, Any]]) -> list[str]:
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def dashboard_exprs() -> list[str]:
    return panel_exprs(dashboard_panels())


def row_panels(title: str) -> list[dict[str, Any]]:
    """The panels under the dashboard row called `title`, up to the next row."""
    panels = dashboard_panels()
    start = next(i for i, panel in enumerate(panels) if panel["type"] == "row" and panel["title"] == title)
    rest = panels[start + 1:]
    end = next((i for i, panel in enumerate(rest) if panel["type"] == "row"), len(rest))
    return rest[:end]


def metric_names_in(expr: str) -> set[str]:
    """The liaison_* and kafka_* metric names a PromQL expression reads."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)  # label values such as job="liaison-router"
    return set(METRIC_NAME.findall(without_strings))


def broker_metric_names() -> set[str]:
    """Every kafka_* name the alert rules and the dashboard (its Brokers row) read."""
    exprs = [rule["expr"] for rule in alert_rules()] + dashboard_exprs()
    return {name for expr in exprs for name in metric_names_in(expr) if name.startswith("kafka_")}
