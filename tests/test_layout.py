"""Rules of the source layout (docs/architecture.md): job tables read in jobs/ only, the package order, plugins."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import imagegate

SOURCE = Path(imagegate.__file__).parent
# A select on job, job_image or job_input (Job, JobImage, JobInput and any column of theirs).
SELECTS_A_JOB_TABLE = re.compile(r"\bselect\(\s*Job")


def _modules(under: Path) -> list[Path]:
    return sorted(path for path in under.rglob("*.py") if "migrations" not in path.parts)


def _imported(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports are not used in this code)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_layout_rules_look_where_the_code_is() -> None:
    assert (SOURCE / "jobs" / "queries.py").is_file()
    assert any(SELECTS_A_JOB_TABLE.search(p.read_text()) for p in _modules(SOURCE / "jobs"))
    assert "imagegate.jobs.models" in _imported(SOURCE / "jobs" / "queries.py")


def test_only_the_jobs_package_selects_from_the_job_tables() -> None:
    outside = [p for p in _modules(SOURCE) if SOURCE / "jobs" not in p.parents]
    offenders = [str(p.relative_to(SOURCE)) for p in outside if SELECTS_A_JOB_TABLE.search(p.read_text())]
    assert offenders == [], "ask imagegate.jobs.queries instead"


def test_keys_and_backends_do_not_import_jobs() -> None:
    for package in ("keys", "backends"):
        for path in _modules(SOURCE / package):
            jobs = sorted(name for name in _imported(path) if name.startswith("imagegate.jobs"))
            assert jobs == [], f"{path.relative_to(SOURCE)} imports {jobs}"


BUILT_IN_BACKENDS = ("imagegate.backends.demo", "imagegate.backends.openai", "imagegate.backends.codex")


def _imports_a_built_in_backend(path: Path) -> list[str]:
    return sorted(name for name in _imported(path) if name.startswith(BUILT_IN_BACKENDS))


def test_only_the_backends_package_imports_a_built_in_backend() -> None:
    # The app, admin UI and CLI reach backends through the Protocol and its hooks, as a plugin's would be.
    outside = [p for p in _modules(SOURCE) if SOURCE / "backends" not in p.parents]
    offenders = {str(p.relative_to(SOURCE)): _imports_a_built_in_backend(p) for p in outside}
    assert {path: names for path, names in offenders.items() if names} == {}
    assert _imports_a_built_in_backend(SOURCE / "backends" / "builtin.py")  # the rule sees real imports


# Reads of app.state other than the typed Services (and the MCP endpoint, which exists before the lifespan).
READS_APP_STATE = re.compile(r"\bapp\.state\.(?!services\b|mcp\b)[a-z_]+")
# Where app.state is set up: the app, the second listener sharing it, and the accessor itself.
OPENS_APP_STATE = {"app.py", "api/legacy_listener.py", "services.py"}


def test_route_code_reads_the_app_through_its_typed_services() -> None:
    outside = [p for p in _modules(SOURCE) if str(p.relative_to(SOURCE)) not in OPENS_APP_STATE]
    offenders = [str(p.relative_to(SOURCE)) for p in outside if READS_APP_STATE.search(p.read_text())]
    assert offenders == [], "use imagegate.services.services(request) (or the AppServices dependency)"


MAX_LINES = 400


def test_no_source_file_is_over_the_house_limit() -> None:
    long = {
        str(p.relative_to(SOURCE)): n for p in _modules(SOURCE) if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by responsibility (at most {MAX_LINES} lines)"


MAX_FUNCTION_LINES = 60


def test_no_function_is_over_the_house_limit() -> None:
    long = [
        f"{path.relative_to(SOURCE)}:{node.name} ({length} lines)"
        for path in _modules(SOURCE)
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
    ]
    assert long == [], f"give parts of these their own names (at most {MAX_FUNCTION_LINES} lines)"


def test_no_test_module_imports_another() -> None:
    tests = Path(__file__).parent
    modules = sorted(tests.rglob("test_*.py"))
    assert Path(__file__) in modules
    assert _is_a_test_module("tests.jobs.test_sql_budget")
    assert not _is_a_test_module("tests.helpers")
    offenders = {
        str(path.relative_to(tests)): sorted(name for name in _imported(path) if _is_a_test_module(name))
        for path in modules
    }
    assert {path: names for path, names in offenders.items() if names} == {}, "share helpers through tests/helpers.py"


def _is_a_test_module(name: str) -> bool:
    return name.startswith("tests.") and any(part.startswith("test_") for part in name.split(".")[1:])
