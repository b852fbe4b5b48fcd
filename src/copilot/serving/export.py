"""A fitted strategy as an MLflow 3 pyfunc model, registered as ``copilot-<chatbot>`` with the alias ``champion``.

The model's only artifact is the pickled fitted strategy. Its input is a one-column table ``context``: each row a
JSON text ``{"chatbot": ..., "turns": [{"role", "text", "label"} or {"role": "tool", "by", "name", "request",
"result", "error"}]}`` (the :class:`copilot.data.context.Context` the
live server builds); the parameter ``k`` (default 5) caps the suggestions. Its output is one JSON text per row: a
list of ``{"text", "score", "label"}``, best first. Plain strings in and out give a signature that MLflow enforces
without warnings and that any MLflow client (REST serving included) can call.

Everything goes through an explicit ``MlflowClient`` (never MLflow's global tracking state): the model is saved to
a temporary folder, its files uploaded as the artifacts of a run in the chatbot's experiment, and a model version
created from them. Aliases, never the deprecated stages.
"""

from __future__ import annotations

import json
import pickle
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from copilot._io import read_json
from copilot.data.context import Context, ContextTurn, Suggestion, tool_turn
from copilot.data.records import Dataset, ToolCall
from copilot.serving.tracking import MlflowTracker, experiment_name
from copilot.strategies.base import Strategy, make_strategy
from copilot.strategies.embeddings import EmbeddingCache

with warnings.catch_warnings():
    # MLflow 3 infers schemas for its bundled agent types while mlflow.pyfunc loads, warning as it goes, which would
    # fail a program or test that treats warnings as errors.
    warnings.simplefilter("ignore")
    import mlflow.pyfunc
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import ModelSignature
    from mlflow.pyfunc import PythonModel
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

CHAMPION_ALIAS = "champion"
MODEL_PREFIX = "copilot-"
STRATEGY_ARTIFACT = "strategy"
DEFAULT_K = 5


def model_name(chatbot: str) -> str:
    """The registered model that holds a chatbot's exported strategies."""
    return f"{MODEL_PREFIX}{chatbot}"


def champion_uri(chatbot: str) -> str:
    return f"models:/{model_name(chatbot)}@{CHAMPION_ALIAS}"


def _turn_to_json(turn: ContextTurn) -> dict[str, Any]:
    if turn.tool is not None:
        return {"role": turn.role, "by": turn.by, **turn.tool.to_json()}
    return {"role": turn.role, "text": turn.text, "label": turn.label}


def _turn_from_json(data: Mapping[str, Any]) -> ContextTurn:
    if data.get("role") == "tool":
        tool = ToolCall(str(data["name"]), data.get("request") or {}, data.get("result"), data.get("error"))
        return tool_turn(tool, data.get("by"))
    return ContextTurn(data["role"], data["text"], data.get("label"))


def context_to_json(context: Context) -> str:
    """The model's input for one context (JSON text); a tool turn travels as its lookup, not its rendering."""
    return json.dumps({"chatbot": context.chatbot, "turns": [_turn_to_json(t) for t in context.turns]})


def context_from_json(value: str | Mapping[str, Any]) -> Context:
    data = json.loads(value) if isinstance(value, str) else value
    return Context(str(data["chatbot"]), tuple(_turn_from_json(t) for t in data.get("turns", [])))


def suggestions_to_json(items: Sequence[Suggestion]) -> str:
    return json.dumps([{"text": s.text, "score": s.score, "label": s.label} for s in items])


def suggestions_from_json(value: str) -> list[Suggestion]:
    return [Suggestion(d["text"], float(d["score"]), d.get("label")) for d in json.loads(value)]


class StrategyModel(PythonModel):
    """The pyfunc wrapper: loads the pickled fitted strategy and answers ``predict`` with its suggestions."""

    def load_context(self, context: Any) -> None:
        with open(context.artifacts[STRATEGY_ARTIFACT], "rb") as fh:
            self.strategy: Strategy = pickle.load(fh)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        k = int((params or {}).get("k", DEFAULT_K))
        contexts = [context_from_json(v) for v in model_input["context"]]
        return [suggestions_to_json(items) for items in self.strategy.suggest_many(contexts, k)]


def _signature() -> ModelSignature:
    return ModelSignature(inputs=Schema([ColSpec("string", "context")]), outputs=Schema([ColSpec("string")]),
                          params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)]))


def _input_example() -> tuple[dict[str, list[str]], dict[str, Any]]:
    context = Context("example", (ContextTurn("customer", "Hello, I need help"),))
    return {"context": [context_to_json(context)]}, {"k": DEFAULT_K}


@dataclass(frozen=True)
class ExportedModel:
    chatbot: str
    name: str
    version: int
    run_id: str
    strategy: str


def export_champion(strategy: Strategy, chatbot: str, tracking_uri: str, *, client: MlflowClient | None = None,
                    alias: str | None = CHAMPION_ALIAS, tags: Mapping[str, str] | None = None) -> int:
    """Register the fitted ``strategy`` as a new version of ``copilot-<chatbot>`` and point ``alias`` at it.

    Args:
        strategy: a fitted strategy (it is pickled as is).
        chatbot: the chatbot it serves.
        tracking_uri: the MLflow tracking and registry store (``sqlite:///...`` or a server URL).
        client: an MlflowClient to reuse (default: a new one for ``tracking_uri``).
        alias: the alias to set on the new version; None registers it without moving any alias.
        tags: extra tags on the run and the model version.

    Returns:
        the new model version's number.
    """
    return export_model(strategy, chatbot, tracking_uri, client=client, alias=alias, tags=tags).version


def export_model(strategy: Strategy, chatbot: str, tracking_uri: str, *, client: MlflowClient | None = None,
                 alias: str | None = CHAMPION_ALIAS, tags: Mapping[str, str] | None = None,
                 logged: LoggedModel | None = None) -> ExportedModel:
    """:func:`export_champion` with everything it created (name, version, run).

    ``logged``: a model already logged by :func:`log_strategy_model` for this same fitted strategy; the new
    version then points at its files instead of storing another copy (chatbots that chose the same champion share
    one artifact, and the server loads it once).
    """
    tracker = MlflowTracker(tracking_uri)
    client = client or tracker.client
    name = model_name(chatbot)
    all_tags = {"copilot.chatbot": chatbot, "copilot.strategy": strategy.describe(), "copilot.stage": "export",
                **(tags or {})}
    if logged is None:
        logged = log_strategy_model(strategy, tracking_uri, client=client, experiment=experiment_name(chatbot),
                                    tags=all_tags)
    version = register_version(client, name, logged, alias=alias, tags=all_tags,
                               description=f"copilot reply suggestions for chatbot {chatbot}")
    return ExportedModel(chatbot, name, version, logged.run_id, strategy.describe())


@dataclass(frozen=True)
class LoggedModel:
    """A fitted strategy saved as a pyfunc model in a run's artifacts: ``source`` is what a model version points at."""

    run_id: str
    source: str


def log_strategy_model(strategy: Strategy, tracking_uri: str, *, client: MlflowClient | None = None,
                       experiment: str, tags: Mapping[str, str] | None = None) -> LoggedModel:
    """Save the fitted ``strategy`` as a pyfunc model (models from code, the pickled strategy its one artifact)
    into a new run of ``experiment``."""
    tracker = MlflowTracker(tracking_uri)
    client = client or tracker.client
    run = client.create_run(tracker.experiment_id(experiment), run_name=f"export {strategy.name}",
                            tags={"copilot.strategy": strategy.describe(), "copilot.stage": "export", **(tags or {})})
    run_id = str(run.info.run_id)
    try:
        with tempfile.TemporaryDirectory(prefix="copilot-export-") as tmp:
            pickled = Path(tmp) / "strategy.pkl"
            with open(pickled, "wb") as fh:
                pickle.dump(strategy, fh, protocol=pickle.HIGHEST_PROTOCOL)
            model_dir = Path(tmp) / "model"
            mlflow.pyfunc.save_model(str(model_dir), python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                              artifacts={STRATEGY_ARTIFACT: str(pickled)}, signature=_signature(),
                              input_example=_input_example(), pip_requirements=[])
            client.log_artifacts(run_id, str(model_dir), artifact_path="model")
            client.log_param(run_id, "strategy", strategy.describe()[:6000])
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return LoggedModel(run_id, f"{run.info.artifact_uri}/model")


def register_version(client: MlflowClient, name: str, logged: LoggedModel, *, alias: str | None = CHAMPION_ALIAS,
                     tags: Mapping[str, str] | None = None, description: str = "") -> int:
    """A new version of registered model ``name`` pointing at ``logged``; ``alias`` moved to it. Returns it."""
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    version = client.create_model_version(name, logged.source, run_id=logged.run_id, tags=dict(tags or {}))
    if alias is not None:
        client.set_registered_model_alias(name, alias, str(version.version))
    return int(version.version)


def load_model_version(client: MlflowClient, tracking_uri: str, name: str, version: int | str) -> Any:
    """Download a registered model version's files and load it as a pyfunc model (no global MLflow state)."""
    mv = client.get_model_version(name, str(version))
    local = download_artifacts(artifact_uri=str(mv.source), tracking_uri=tracking_uri)
    return mlflow.pyfunc.load_model(local)


def resolve_alias(client: MlflowClient, chatbot: str, alias: str = CHAMPION_ALIAS) -> int | None:
    """The version ``alias`` points at for ``copilot-<chatbot>``, or None (no such model or alias)."""
    try:
        return int(client.get_model_version_by_alias(model_name(chatbot), alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def predict_suggestions(model: Any, context: Context, k: int) -> list[Suggestion]:
    """One context through a loaded pyfunc model."""
    out = model.predict(pd.DataFrame({"context": [context_to_json(context)]}), params={"k": int(k)})
    first = out[0] if isinstance(out, list) else out.iloc[0, 0] if hasattr(out, "iloc") else out[0]
    return suggestions_from_json(str(first))


# ---------------------------------------------------------------------------------------------------------------
# The champions file and `copilot export`


def load_champions(path: str | Path) -> dict[str, dict[str, Any]]:
    """Per chatbot ``{strategy, params}`` from a tuning result.

    Accepts ``copilot tune``'s ``tuning.json`` (``{"per_chatbot": {bot: {"champion": {"strategy", "params",
    ...}}}, ...}``, :mod:`copilot.evaluation.tuning`) and a plain mapping
    ``{bot: {"strategy": name, "params": {...}}}``.
    """
    data = read_json(path)
    if isinstance(data, Mapping) and isinstance(data.get("per_chatbot"), Mapping):
        data = data["per_chatbot"]
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected an object of chatbots")
    out: dict[str, dict[str, Any]] = {}
    for bot, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"{path}: {bot}: expected an object")
        champion = entry.get("champion", entry)
        if isinstance(champion, str):
            champion = {"strategy": champion, "params": entry.get("params", {})}
        if not isinstance(champion, Mapping) or "strategy" not in champion:
            raise ValueError(f"{path}: {bot}: no champion strategy (expected {{'strategy': name, 'params': {{}}}})")
        out[str(bot)] = {"strategy": str(champion["strategy"]), "params": dict(champion.get("params") or {})}
    return out


def export_champions(champions: Mapping[str, Mapping[str, Any]], train: Dataset, tracking_uri: str, *,
                     chatbots: Sequence[str] | None = None,
                     embedding_cache: EmbeddingCache | None = None) -> list[ExportedModel]:
    """Fit each chatbot's champion on ``train`` and export it (alias ``champion``).

    Fitted exactly as the evaluation fits champions (:func:`copilot.evaluation.runs.champions_predictions`): on the
    whole training set, one fit per distinct setting shared by the chatbots that chose it. A strategy that learns
    across chatbots (the global classifier) therefore serves what was evaluated, not a model of one chatbot's data.
    ``embedding_cache`` serves the fits only: the exported strategies carry no cache.
    """
    tracker = MlflowTracker(tracking_uri)
    fitted: dict[str, tuple[Strategy, LoggedModel]] = {}
    exported = []
    for bot in sorted(champions):
        if chatbots is not None and bot not in chatbots:
            continue
        spec = champions[bot]
        key = json.dumps([spec["strategy"], dict(spec.get("params") or {})], sort_keys=True, default=str)
        if key not in fitted:
            strategy = make_strategy(spec["strategy"], spec.get("params") or {}).use_embedding_cache(embedding_cache)
            strategy.fit(train)
            logged = log_strategy_model(strategy, tracking_uri, client=tracker.client,
                                        experiment=experiment_name(bot))
            fitted[key] = (strategy, logged)
        strategy, logged = fitted[key]
        exported.append(export_model(strategy, bot, tracking_uri, client=tracker.client, logged=logged))
    return exported
