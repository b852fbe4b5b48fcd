from __future__ import annotations

from pathlib import Path

from copilot.settings import Settings, find_project_root

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_anchored_at_the_checkout_from_any_subfolder() -> None:
    from_notebooks = Settings.from_env({}, root=find_project_root(ROOT / "notebooks"))
    assert from_notebooks.work_dir == ROOT / "data" / "generated"
    assert from_notebooks.mlflow_tracking_uri == f"sqlite:///{ROOT / 'mlflow.db'}"
    assert from_notebooks.star_dir is None


def test_environment_wins(tmp_path: Path) -> None:
    env = {"COPILOT_STAR_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
           "COPILOT_WORK_DIR": str(tmp_path / "w")}
    settings = Settings.from_env(env, root=ROOT)
    assert settings.star_dir == tmp_path and settings.work_dir == tmp_path / "w"
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5000"


def test_outside_a_checkout_the_working_folder_is_the_root(tmp_path: Path) -> None:
    assert find_project_root(tmp_path) == tmp_path.resolve()
