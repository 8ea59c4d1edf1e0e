"""The README documents every setting and the commands people are told to run."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from config.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ENV_NAME = {"env": "APP_ENV"}  # every other field is its name in upper case


def test_settings_table_lists_every_setting_with_its_default():
    text = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", text, re.M))
    for field in dataclasses.fields(Settings):
        name = ENV_NAME.get(field.name, field.name.upper())
        assert name in rows, f"README settings table lacks {name}"
        default = field.default
        if isinstance(default, bool):
            default = str(default).lower()
        if isinstance(default, (int, str)) and default not in ("",) and field.name != "data_dir":
            assert f"`{default}`" in rows[name], f"README default of {name} should be {default!r}"


def test_readme_names_the_commands_and_the_measured_figures():
    text = (REPO / "README.md").read_text()
    for command in ("make run", "make test", "flask --app web register-model", "python -m training train",
                    "docker compose", "## Measured figures", "bench/inference.py", "bench/service.py",
                    "masoudnickparvar", "## Reliability and security", "bench/recovery.py", "bench/load.py",
                    "celery -A workers beat", "flask --app web revoke-token"):
        assert command in text, command
    assert "lead fills in" not in text, "a figures placeholder is left in the README"
