"""The serving image's build context: .dockerignore keeps every file serving/Dockerfile COPYs
and nothing of the environment, the MLflow store, the DVC cache or git.

The patterns are read with Docker's rules (moby's patternmatcher, which buildah uses too): a
path is excluded when the last pattern matching it, or one of its parent directories, is not a
``!`` exception; ``*`` and ``?`` stay within one path element, ``**`` spans any number.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "serving" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
#: What must never reach the builder: gigabytes, and the stores that hold credentials and data.
EXCLUDED = [
    ".venv/bin/python",
    ".venv/lib/python3.11/site-packages/mlflow/__init__.py",
    "mlruns/mlflow.db",
    "mlruns/1/abc/artifacts/model/model.onnx",
    ".git/HEAD",
    ".git/objects/pack/pack-1.pack",
    ".dvc/cache/files/md5/ab/cdef",
    ".dvc/config.local",
    ".team/credentials.env",
    "data/raw/penguins.csv",
    "tests/serving/image_smoke.py",
]


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def read_dockerignore(text: str) -> list[tuple[bool, re.Pattern]]:
    """(is an exception, regex) for each pattern, in order."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line[1:].strip() if exception else line
        pattern = str(Path(pattern.lstrip("/"))) if pattern not in (".", "") else "."
        rules.append((exception, _pattern_regex(pattern)))
    return rules


def excluded(rules: list[tuple[bool, re.Pattern]], path: str) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for exception, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            result = not exception
    return result


def copy_sources(dockerfile: str) -> list[str]:
    """The context paths of every COPY without --from, ARG defaults substituted."""
    text = re.sub(r"\\\n", " ", dockerfile)
    args: dict[str, str] = {}
    sources: list[str] = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        instruction = words[0].upper()
        if instruction == "ARG":
            name, _, default = words[1].partition("=")
            args.setdefault(name, default)
        elif instruction == "COPY" and not any(w.startswith("--from") for w in words):
            paths = [w for w in words[1:] if not w.startswith("--")][:-1]
            for path in paths:
                sources.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), path))
    return sources


def context_files(source: str) -> list[str]:
    """The files a COPY source names: a glob's matches in the repository, else the path as
    written (an export such as models/export/model.onnx exists only after `make run`)."""
    if any(ch in source for ch in "*?["):
        found = sorted(str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob(source))
        assert found, f"COPY {source} matches nothing in the repository"
        return found
    return [source]


@pytest.fixture(scope="module")
def rules():
    assert DOCKERIGNORE.exists(), (
        "no .dockerignore: `make image` sends the whole repository as the build context"
    )
    return read_dockerignore(DOCKERIGNORE.read_text())


def test_the_dockerfile_copies_what_we_think():
    sources = copy_sources(DOCKERFILE.read_text())
    assert "models/export/model.onnx" in sources
    assert "serving/*.py" in sources and "serving/requirements.txt" in sources


@pytest.mark.parametrize(
    "path", [f for s in copy_sources(DOCKERFILE.read_text()) for f in context_files(s)]
)
def test_what_the_dockerfile_copies_is_in_the_context(rules, path):
    assert not excluded(rules, path), f".dockerignore excludes {path}, which the Dockerfile COPYs"


def test_another_model_dir_under_models_is_in_the_context(rules):
    for name in ("model.onnx", "model.json", "golden.json"):
        assert not excluded(rules, f"models/candidate/{name}")


@pytest.mark.parametrize("path", EXCLUDED)
def test_the_environment_stores_and_git_are_not(rules, path):
    assert excluded(rules, path), f".dockerignore lets {path} into the build context"


@pytest.mark.parametrize(
    ("text", "path", "out"),
    [
        ("*\n!serving/*.py\n", "serving/app.py", False),
        ("*\n!serving/*.py\n", "serving/sub/app.py", True),
        ("*\n!models/**/model.onnx\n", "models/export/model.onnx", False),
        (".venv\n", ".venv/bin/python", True),
        ("*\n!models/**/model.onnx\nmlruns\n", "mlruns/1/model.onnx", True),
        ("/.git\n# comment\n", ".git/HEAD", True),
        ("", "anything", False),
    ],
)
def test_the_reader_follows_dockers_rules(text, path, out):
    assert excluded(read_dockerignore(text), path) is out
