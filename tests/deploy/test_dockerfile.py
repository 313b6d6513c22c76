"""Dockerfile and .dockerignore: the image a user builds is small, non-root and drains on stop."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]


class Instruction(NamedTuple):
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage (each FROM starts a stage)."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[Instruction]] = []
    heredoc_end: str | None = None
    for line in joined.splitlines():
        stripped = line.strip()
        if heredoc_end is not None:
            if stripped == heredoc_end:
                heredoc_end = None
            continue
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, args = stripped.partition(" ")
        if heredoc := re.search(r"<<-?'?(\w+)'?", args):
            heredoc_end = heredoc.group(1)
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages


@pytest.fixture(scope="module")
def final_stage() -> list[Instruction]:
    return parse_dockerfile((REPO / "Dockerfile").read_text())[-1]


def only(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def test_runtime_stage_is_python_slim(final_stage: list[Instruction]) -> None:
    assert re.match(r"python:3\.1[1-9][.\d]*-slim\b", only(final_stage, "FROM")[0])


def test_runs_as_a_non_root_user(final_stage: list[Instruction]) -> None:
    users = only(final_stage, "USER")
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_healthcheck_probes_health_without_curl(final_stage: list[Instruction]) -> None:
    (healthcheck,) = only(final_stage, "HEALTHCHECK")
    assert "/health" in healthcheck
    assert "python" in healthcheck and "urllib" in healthcheck
    assert "curl" not in healthcheck  # not in python:*-slim


def test_stops_with_sigterm_delivered_to_the_gateway(final_stage: list[Instruction]) -> None:
    assert only(final_stage, "STOPSIGNAL") == ["SIGTERM"]
    # Exec form: the gateway is PID 1 and gets the signal, no shell in between.
    (cmd,) = only(final_stage, "CMD")
    assert json.loads(cmd) == ["gateway", "run", "--host", "0.0.0.0", "--port", "8000"]


def test_lua_scripts_are_installed_with_the_package() -> None:
    # The scripts ship inside the package (gateway.lua): lua/ must be in the build stage before
    # the install, and no runtime path or variable points at a loose copy.
    builder = parse_dockerfile((REPO / "Dockerfile").read_text())[0]
    keywords = [(i.keyword.upper(), i.args) for i in builder]
    copied = next(n for n, (k, a) in enumerate(keywords) if k == "COPY" and a.split()[0] == "lua/")
    installed = next(n for n, (k, a) in enumerate(keywords) if k == "RUN" and "pip install --no-deps ." in a)
    assert copied < installed
    assert "GATEWAY_LUA_DIR" not in (REPO / "Dockerfile").read_text()


def copy_sources() -> list[str]:
    stages = parse_dockerfile((REPO / "Dockerfile").read_text())
    sources = []
    for stage in stages:
        for args in only(stage, "COPY"):
            parts = [p for p in args.split() if not p.startswith("--")]
            if "--from=" not in args:
                sources.extend(parts[:-1])
    return sources


def test_copies_the_project() -> None:
    sources = {s.rstrip("/") for s in copy_sources()}
    assert {"gateway", "services", "lua", "pyproject.toml", "README.md"} <= sources


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last match wins)."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            matched = fnmatch.fnmatch(Path(path).name, pattern[3:])
        else:
            matched = fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/")
        if matched:
            excluded = not negate
    return excluded


@pytest.mark.parametrize("source", sorted(set(copy_sources())))
def test_every_copied_path_exists_and_is_in_the_build_context(source: str) -> None:
    assert (REPO / source).exists(), f"COPY {source}: missing in the repository"
    assert not dockerignore_excludes(source.rstrip("/"))


@pytest.mark.parametrize("path", [".venv", ".git", "tests", "bench/results", "gateway/__pycache__"])
def test_local_state_stays_out_of_the_build_context(path: str) -> None:
    assert dockerignore_excludes(path)
