"""README.md stays a user's guide that tells the truth: short, the two set-up commands, a
layout naming every package and module that exists, links that resolve."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SETUP = ["python -m pip install uv && uv run --locked python jobs/distill.py --config demo "
         "--output-dir outputs/demo",
         "python -m pip install uv && uv run --locked pytest"]


def test_the_readme_is_a_guide_of_at_most_250_lines():
    assert len(README.splitlines()) <= 250


def test_the_readme_gives_exactly_the_two_set_up_commands_and_ci_runs_the_second():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    setup = [line for block in blocks for line in block.splitlines() if "pip install" in line]
    assert setup == SETUP
    assert "uv run --locked pytest" in (REPO / ".ci" / "run").read_text()


def test_the_layout_names_every_package_and_module():
    layout = README.split("## Layout", 1)[1].split("```", 2)[1]
    packages = {p.parent for p in (REPO / "unipose_ray").rglob("__init__.py")}
    lines = {m.group(1): line for line in layout.splitlines()
             if (m := re.match(r"\s*(\w+)/\s", line))}
    for package in packages - {REPO / "unipose_ray"}:
        if package.parent.name != "unipose_ray":  # data/synthetic/: on its parent's line
            assert f"{package.name}/" in lines.get(package.parent.name, ""), package
            continue
        line = lines.get(package.name)
        assert line is not None, f"{package.name}/ is not in README's layout"
        modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
        named = set(re.findall(r"\b(\w+)\b", line))
        assert modules <= named, f"{package.name}/: {sorted(modules - named)} not in README"
    top = {p.name for p in (REPO / "unipose_ray").glob("*.py") if p.stem != "__init__"}
    assert all(name in layout for name in top), top


def test_every_link_and_path_in_the_readme_exists():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    paths = re.findall(r"`((?:docs|cluster|jobs|released|tests|unipose_ray)/[\w./-]*\w)`", README)
    missing = [p for p in [*links, *paths] if "*" not in p and not (REPO / p).exists()]
    assert not missing
