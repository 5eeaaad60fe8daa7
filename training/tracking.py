"""Experiment tracking: every fine-tune, evaluation, search and model tool logs one MLflow run.

A run holds the tool's parameters (flattened: ``config.learning_rate``), its metrics (final
figures, and per-epoch curves with their step), the dataset fingerprint (``dataset.sha256``,
the same digest ``training.finetune`` writes into ``metadata.json``) and its artifacts (the
exported ``metadata.json`` and ``MODEL_CARD.md``). The run's id and store go into the
exported ``metadata.json`` (``"tracking"``) and the model card, so a registered version
(``ModelVersion.metadata``) links the run that made it.

Where: ``MLFLOW_TRACKING_URI`` when set (a ``file:`` folder, ``sqlite:///...`` or an MLflow
server), else a file store at ``$VAR_DIR/mlruns`` (``var/mlruns`` by default). Open it with
``MLFLOW_ALLOW_FILE_STORE=true uv tool run --from mlflow==3.17.2 mlflow ui --backend-store-uri
var/mlruns``
(docs/model/tools.md). Only the MLflow client (``mlflow-skinny``) is a dependency.

The client is used directly (``MlflowClient``), not MLflow's fluent API: no process-wide
active run or tracking URI, so a test or a tool nested in another never logs into the
wrong run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
STORE_DIR = "mlruns"
FILE_STORE_OPT_IN = "MLFLOW_ALLOW_FILE_STORE"
_MAX_PARAM_LENGTH = 6000  # MLflow refuses longer parameter values


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the file store ``$VAR_DIR/mlruns`` as a ``file:`` URI."""
    configured = os.environ.get(TRACKING_URI_ENV, "").strip()
    if configured:
        return configured
    store = Path(os.environ.get("VAR_DIR") or "var") / STORE_DIR
    store.mkdir(parents=True, exist_ok=True)
    return store.resolve().as_uri()


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested parameters as MLflow's flat string ones: ``{"config": {"lr": 1}}`` ->
    ``{"config.lr": "1"}``; long values are cut to MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:_MAX_PARAM_LENGTH]
    return flat


@dataclass
class TrackedRun:
    """One open MLflow run of a tool."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    experiment: str
    tracking_uri: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        self.client.log_batch(self.run_id, params=[Param(key, value) for key, value in flat.items()])

    def log_metrics(self, metrics: Mapping[str, float | int | None], step: int = 0) -> None:
        """Numeric figures (``None`` values, a metric a tool could not measure, are skipped)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items() if value is not None]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_history(self, history: Mapping[str, list[float]], prefix: str = "") -> None:
        """Per-epoch curves (Keras ``History.history``), one step per epoch."""
        for epoch in range(max((len(values) for values in history.values()), default=0)):
            self.log_metrics(
                {f"{prefix}{key}": values[epoch] for key, values in history.items() if epoch < len(values)}, step=epoch
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifacts(self, *paths: Path) -> None:
        """Files (a model's ``metadata.json``, ``MODEL_CARD.md``) copied into the run."""
        for path in paths:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def record(self) -> dict[str, str]:
        """What ``metadata.json`` keeps of the run (``"tracking"``): enough to open it."""
        return {
            "tool": "mlflow",
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
        }


@contextlib.contextmanager
def tracked_run(
    experiment: str, *, run_name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
) -> Iterator[TrackedRun]:
    """An MLflow run in ``experiment`` (created if new) for the ``with`` block: FINISHED
    when the block ends, FAILED (and the error re-raised) when it raises."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    if uri.startswith("file:"):
        # MLflow 3 keeps its file store in maintenance mode behind this opt-in; a database
        # store needs the full `mlflow` package (docs/model/tools.md), so the file store it is.
        os.environ.setdefault(FILE_STORE_OPT_IN, "true")
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()})
    tracked = TrackedRun(client, run.info.run_id, experiment_id, experiment, uri)
    if params:
        tracked.log_params(params)
    try:
        yield tracked
    except BaseException:
        client.set_terminated(tracked.run_id, status="FAILED")
        raise
    client.set_terminated(tracked.run_id, status="FINISHED")


def card_section(record: Mapping[str, Any] | None) -> str:
    """The model card's "Experiment tracking" paragraph for a ``metadata.json`` ``tracking`` record."""
    if not record:
        return ""
    return (
        "## Experiment tracking\n\n"
        f"MLflow run `{record['run_id']}` in experiment `{record['experiment']}` "
        f"(store `{record['tracking_uri']}`): parameters, metrics, dataset fingerprint and this card. "
        f"Open it with `MLFLOW_ALLOW_FILE_STORE=true uv tool run --from mlflow==3.17.2 mlflow ui "
        f"--backend-store-uri {record['tracking_uri']}`.\n"
    )


def scalar_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric top-level figures of a metrics summary (``ClassificationMetrics.summary()``
    and the like), for ``TrackedRun.log_metrics``; lists and tables are left to the artifacts."""
    return {
        f"{prefix}{key}": float(value)
        for key, value in summary.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
