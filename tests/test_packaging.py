"""The two dependency lists (pyproject for pip, environment.yml for conda users) must agree,
environment.yml must install scorebench itself for every rule that names it, and the README's
commands must be the ones CI runs."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SELF_INSTALL = "-e ${SCOREBENCH_ROOT}"  # pip expands the variable, which the Snakefile sets


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = [r for r in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)) if r != SELF_INSTALL]
    assert sorted(project["dependencies"]) == sorted(pip_section)
    assert {_name(r) for r in project["dependencies"]} == {_name(r) for r in pip_section}


def test_every_rule_runs_in_the_environment_that_installs_scorebench():
    """`--sdm conda` builds environment.yml for each rule: every rule must name it, and it must
    install scorebench, which every rule's command is."""
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    rules = {}
    for f in files:
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", f.read_text(), re.M):
            conda = re.search(r"^    conda:\n\s+\"([^\"]+)\"", m.group(2), re.M)
            rules[m.group(1)] = (f.parent / conda.group(1)).resolve() if conda else None
    assert len(rules) >= 11, sorted(rules)
    assert {r: p for r, p in rules.items() if r != "all" and p != ROOT / "environment.yml"} == {}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section[-1] == SELF_INSTALL


def test_the_self_install_line_resolves_to_this_checkout(tmp_path):
    """What conda does with the pip section, without conda: the Snakefile sets SCOREBENCH_ROOT while
    parsing; pip, run from the folder Snakemake builds envs in, expands it to this checkout."""
    probe = ("import os, sys\nfrom snakemake.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
             "    pass\nprint('ROOT=' + os.environ.get('SCOREBENCH_ROOT', ''))\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe, "--lint", "-s", str(ROOT / "Snakefile")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    root = out.stdout.strip().splitlines()[-1].removeprefix("ROOT=")
    assert Path(root) == ROOT, out.stdout[-2000:] + out.stderr[-2000:]
    conda_dir = tmp_path / ".snakemake" / "conda"
    conda_dir.mkdir(parents=True)
    (conda_dir / "condaenv.requirements.txt").write_text(SELF_INSTALL + "\n")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
                          "-r", "condaenv.requirements.txt"], cwd=conda_dir, env={**os.environ, "SCOREBENCH_ROOT": root},
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    assert "Would install scorebench" in pip.stdout, pip.stdout[-2000:]


def test_torch_ranges_never_pin_above_what_is_installable():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_reqs = [r for r in project["dependencies"] if _name(r) in ("torch", "torchvision")]
    assert all("==" not in r and "<" not in r for r in torch_reqs), torch_reqs


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = 'python3 -m pip install -q -e ".[test]" && python3 -m pytest'
    assert test_cmd in readme and test_cmd in ci
