from __future__ import annotations

import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from handoff.settings import Settings as ServerSettings

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


def test_every_server_setting_is_read_from_the_environment_as_its_declared_type(tmp_path: Path) -> None:
    """Each field of the server's Settings, set through its HANDOFF_ variable (all at once), arrives parsed to its
    declared type.

    The values come from the field's type and default, never from a list of names, so a new field whose type the
    environment cannot express fails here.
    """
    hints = get_type_hints(ServerSettings)
    # Strings that Settings itself checks need a legal value other than their default.
    legal = {"sqlite_synchronous": "NORMAL", "push_urgency": "low", "vapid_subject": "https://example.com/ops"}
    declared: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    env: dict[str, str] = {}
    for f in fields(ServerSettings):
        declared[f.name] = kind = _present_type(hints[f.name])
        if kind is str:
            expected[f.name] = legal.get(f.name, f"{f.default or ''}-{f.name}")
        elif kind in (int, float):
            expected[f.name] = kind(f.default or 0) + 1
        elif kind is Path:
            expected[f.name] = tmp_path / f.name
        elif kind == tuple[str, ...]:
            expected[f.name] = ("https://a.example", "https://b.example")
        else:
            raise AssertionError(f"Settings.{f.name}: this test cannot write a {kind!r} yet")
        value = expected[f.name]
        env[f"HANDOFF_{f.name.upper()}"] = " , ".join(value) if isinstance(value, tuple) else str(value)
    settings = ServerSettings.from_env(env)
    for name, kind in declared.items():
        assert getattr(settings, name) == expected[name], name
        assert isinstance(getattr(settings, name), get_origin(kind) or kind), name


def test_a_server_setting_whose_type_has_no_parser_is_refused_by_name() -> None:
    @dataclass(frozen=True)
    class WithAFlag(ServerSettings):
        flag: bool = False

    with pytest.raises(TypeError, match=r"Settings\.flag: no environment parser for <class 'bool'>"):
        WithAFlag.from_env({})


def _present_type(hint: Any) -> Any:
    """``X`` of ``X | None``; any other hint as it is."""
    if isinstance(hint, types.UnionType):
        (present,) = (arg for arg in get_args(hint) if arg is not type(None))
        return present
    return hint
