"""The Dockerfile, compose.yaml and the GitHub workflows: linted and checked offline.

hadolint and actionlint are test dependencies (pyproject's `test` extra ships both as wheels):
if they are missing the tests fail, they do not skip. No Docker engine runs here: the image is
built with buildah and run by tests/image (marker `image`, scripts/image).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    """The linter next to this interpreter (the venv), else on PATH; missing is a failure."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: install the test extra (pip install -e '.[test]')")
    return found


def run(*cmd: str, cwd: Path = ROOT, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\").strip() if current else stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, args = current.partition(" ")
            out.append((keyword.upper(), args.strip()))
            current = ""
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def final_stage(ins: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
    return ins[last_from:]


# --- linters --------------------------------------------------------------------------------------


def test_hadolint_passes_at_warning_threshold() -> None:
    result = run(tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    result = run(tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(bad))
    assert result.returncode != 0 and "DL3008" in result.stdout, result.stdout + result.stderr


def test_only_the_apt_pin_rule_is_ignored_and_it_says_why() -> None:
    text = DOCKERFILE.read_text()
    # One per stage's apt-get install (the build stage's binutils, the runtime's sandbox).
    assert re.findall(r"hadolint ignore=(\S+)", text) == ["DL3008", "DL3008"]
    assert "security update" in text, "the DL3008 ignore must keep its reason"
    assert not (ROOT / ".hadolint.yaml").exists() and not (ROOT / ".hadolint.yml").exists()


def test_actionlint_passes_on_every_workflow() -> None:
    assert {w.name for w in WORKFLOWS} >= {"ci.yml", "deploy.yml"}
    result = run(tool("actionlint"), "-no-color", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - run: echo ${{ github.event.nope.nope }}\n        shel: bash\n")
    result = run(tool("actionlint"), "-no-color", str(bad))
    assert result.returncode != 0, result.stdout + result.stderr


# --- Dockerfile facts -----------------------------------------------------------------------------


def test_base_image_is_an_argument_defaulting_to_slim_python_311(dockerfile: list[tuple[str, str]]) -> None:
    first_from = next(i for i, (k, _) in enumerate(dockerfile) if k == "FROM")
    args = [a for k, a in dockerfile[:first_from] if k == "ARG"]
    base = [a for a in args if a.startswith("BASE_IMAGE=")]
    assert base, "ARG BASE_IMAGE must be declared before the first FROM"
    default = base[0].split("=", 1)[1]
    assert default.startswith("python:3.11") and "slim" in default
    froms = [a for k, a in dockerfile if k == "FROM"]
    assert len(froms) >= 2, "multi-stage: build and runtime"
    assert all(f.startswith("${BASE_IMAGE}") for f in froms)


def test_venv_in_opt_venv_installed_from_the_repo(dockerfile: list[tuple[str, str]]) -> None:
    text = " ".join(a for _, a in dockerfile)
    assert "python -m venv /opt/venv" in text
    assert any(k == "RUN" and re.search(r"pip install .*-c requirements\.lock \.$", a) for k, a in dockerfile)
    runtime = final_stage(dockerfile)
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    assert any(k == "ENV" and "PATH=/opt/venv/bin:$PATH" in a for k, a in runtime)


def test_runs_as_a_numeric_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = [a for k, a in final_stage(dockerfile) if k == "USER"]
    assert users, "the runtime stage must set USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"USER must be numeric (Kubernetes/Cloud Run can then verify non-root): {users[-1]}"
    assert int(match.group(1)) != 0 and (match.group(2) is None or int(match.group(2)) != 0)


def test_sandbox_packages_installed_lean(dockerfile: list[tuple[str, str]]) -> None:
    apt = [a for k, a in final_stage(dockerfile) if k == "RUN" and "apt-get install" in a]
    assert len(apt) == 1
    cmd = apt[0]
    assert re.search(r"apt-get install -y --no-install-recommends bubblewrap python3\b", cmd)
    assert "rm -rf /var/lib/apt/lists/*" in cmd


@pytest.mark.parametrize(("port", "expected"), [("9123", "9123"), (None, "8000")])
def test_cmd_honours_port(dockerfile: list[tuple[str, str]], tmp_path: Path, port: str | None, expected: str) -> None:
    """Run the image's CMD through a real sh, with a stand-in `itemflow` that prints its args."""
    (cmd,) = [json.loads(a) for k, a in final_stage(dockerfile) if k == "CMD"]
    assert cmd[:2] == ["sh", "-c"]
    fake = tmp_path / "itemflow"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    if port is not None:
        env["PORT"] = port
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["serve", "--host", "0.0.0.0", "--port", expected]


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "**", "start from nothing (no .venv, .git, .env or .data in the context)"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "requirements.lock", "README.md", "src"}
    copied = " ".join(a for k, a in instructions(DOCKERFILE.read_text()) if k == "COPY" and "--from" not in a)
    for name in ("pyproject.toml", "requirements.lock", "README.md", "src"):
        assert name in copied


# --- compose.yaml ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_services_and_health(compose: dict) -> None:
    services = compose["services"]
    assert {"api", "worker", "runner", "postgres", "redis"} <= set(services)
    for name in ("api", "worker", "runner", "postgres", "redis"):
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} needs a health check"
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"


def test_compose_startup_order(compose: dict) -> None:
    s = compose["services"]
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert s[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert s[name]["depends_on"]["runner"]["condition"] == "service_healthy"
    assert s["api"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_api_uses_the_runner_and_separate_workers(compose: dict) -> None:
    s = compose["services"]
    api_env, worker_env, runner_env = (s[n]["environment"] for n in ("api", "worker", "runner"))
    assert api_env["ITEMFLOW_EMBEDDED_WORKER"] == "false"
    runner_port = runner_env["PORT"]
    assert api_env["ITEMFLOW_SANDBOX_URL"] == worker_env["ITEMFLOW_SANDBOX_URL"] == f"http://runner:{runner_port}"
    assert api_env["ITEMFLOW_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert api_env["ITEMFLOW_REDIS_URL"].startswith("redis://redis:6379")
    assert s["worker"]["command"] == ["itemflow", "worker"]
    # Only the API is published, and only on loopback; the runner gets the token and nothing else.
    assert [n for n, svc in s.items() if svc.get("ports")] == ["api"]
    assert all(p.startswith("127.0.0.1:") for p in s["api"]["ports"])
    assert set(runner_env) == {"PORT", "ITEMFLOW_RUNNER_TOKEN", "ITEMFLOW_LOG_LEVEL"}


def test_docker_compose_config_accepts_it() -> None:
    docker = shutil.which("docker")
    if docker is None or run(docker, "compose", "version").returncode != 0:
        pytest.skip("the docker compose plugin is not installed here (structure is checked above)")
    env = {**os.environ, "ITEMFLOW_SECRET_KEY": "x" * 32, "ITEMFLOW_RUNNER_TOKEN": "y" * 32}
    result = run(docker, "compose", "-f", "compose.yaml", "config", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
