"""The two dependency lists (pyproject for pip, environment.yml for conda users) must agree,
and the README's commands must be the ones CI runs."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(project["dependencies"]) == sorted(pip_section)
    assert {_name(r) for r in project["dependencies"]} == {_name(r) for r in pip_section}


def test_torch_ranges_never_pin_above_what_is_installable():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_reqs = [r for r in project["dependencies"] if _name(r) in ("torch", "torchvision")]
    assert all("==" not in r and "<" not in r for r in torch_reqs), torch_reqs


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = 'python3 -m pip install -q -e ".[test]" && python3 -m pytest'
    assert test_cmd in readme and test_cmd in ci
