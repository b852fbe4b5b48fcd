"""The pyfunc model's code file (MLflow "models from code"): MLflow saves this file with the model and runs it at
load time, so no cloudpickled Python object is stored; the fitted strategy is the model's pickled artifact."""

from mlflow.models import set_model

from copilot.serving.export import StrategyModel

set_model(StrategyModel())
