"""The README and the documentation site: length, links, navigation, and the generated parts."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAX_README_LINES = 250

#: ``[text](target)`` links, images included.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
#: Repository paths named in code spans: `consumer/worker/faults.py`.
REPO_PATH = re.compile(r"`((?:producer|consumer|shared|tests|bench|docs|requirements)/[A-Za-z0-9_./-]*)`")
#: Dotted names of the project's modules and their attributes: `shared.backoff.Backoff`.
DOTTED = re.compile(r"(\w+ )?`((?:producer|consumer|shared)(?:\.[A-Za-z_]\w*)+)(?:\(\))?`")


def load_hooks() -> ModuleType:
    """docs/hooks.py as MkDocs loads it: by path (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("redis_archive_docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def slugify(heading: str) -> str:
    """The anchor MkDocs' toc (and GitHub, for these headings) gives a heading."""
    text = re.sub(r"[`*]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {slugify(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def nav_pages(nav: list[Any]) -> list[str]:
    found = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        found.extend(nav_pages(value) if isinstance(value, list) else [value])
    return found


def names_settings_reads() -> set[str]:
    """Every variable ``Settings.from_env`` looks up, seen from outside: an environment that records."""
    asked: list[str] = []

    class Recorder(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            asked.append(key)
            return default

        def __getitem__(self, key: str) -> str:
            asked.append(key)
            raise KeyError(key)

    Settings.from_env(Recorder())
    return set(asked)


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines, at most {MAX_README_LINES}"


def test_readme_keeps_the_setup_commands_the_makefile_has() -> None:
    readme = README.read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test", "docs"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), f"no `{target}` in the Makefile"


def test_readme_links_into_docs_resolve() -> None:
    readme = README.read_text(encoding="utf-8")
    links = [target for target in LINK.findall(readme) if target.startswith("docs/")]
    assert len(links) >= 10, "the README should link into the site's pages"
    for target in links:
        path, _, anchor = target.partition("#")
        page = ROOT / path
        assert page.is_file(), f"README.md links to {target}: no such file"
        if anchor:
            assert anchor in anchors(page), f"README.md links to {target}: no such heading in {path}"


def test_readme_links_only_relative_into_docs() -> None:
    for target in LINK.findall(README.read_text(encoding="utf-8")):
        assert target.startswith(("docs/", "http://", "https://")), f"README.md links to {target}"


def test_nav_lists_every_page_and_only_pages() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    assert len(listed) == len(set(listed)), "a page is listed twice in mkdocs.yml's nav"
    assert set(listed) == {page.name for page in pages()}


def test_links_between_pages_resolve() -> None:
    for page in pages():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            if path == "openapi.json":  # generated at build time (docs/hooks.py)
                continue
            linked = DOCS / path if path else page
            assert linked.is_file(), f"{page.name} links to {target}: no such file"
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked), f"{page.name} links to {target}: no such heading"


def test_paths_named_in_the_docs_exist() -> None:
    named = 0
    for source in [README, *pages()]:
        for path in REPO_PATH.findall(source.read_text(encoding="utf-8")):
            named += 1
            assert (ROOT / path).exists(), f"{source.name} names {path}, which does not exist"
    assert named > 20


def test_modules_named_in_the_docs_exist() -> None:
    named = 0
    for source in [README, *pages()]:
        for before, dotted in DOTTED.findall(source.read_text(encoding="utf-8")):
            if before.strip() == "logger":  # a logger's name, not a module
                continue
            named += 1
            parts = dotted.split(".")
            for split in range(len(parts), 0, -1):
                try:
                    obj: Any = importlib.import_module(".".join(parts[:split]))
                except ImportError:
                    continue
                for attr in parts[split:]:
                    assert hasattr(obj, attr), f"{source.name} names {dotted}: no {attr}"
                    obj = getattr(obj, attr)
                break
            else:
                raise AssertionError(f"{source.name} names {dotted}, which does not import")
    assert named > 10


#: A page the code points to: docs/cluster.md, docs/lock.md, "Why not Sentinel for the lock".
CODE_POINTER = re.compile(r'docs/([a-z-]+\.md)(?:, "([^"]+)")?')


def test_code_points_to_pages_and_headings_that_exist() -> None:
    pointed = 0
    for package in ("producer", "consumer", "shared"):
        for source in sorted((ROOT / package).rglob("*.py")):
            text = source.read_text(encoding="utf-8")
            readme = re.search(r"\(README, \"|README: |see the README", text)
            assert readme is None, f"{source} points into the README, whose sections moved to docs/"
            for page, heading in CODE_POINTER.findall(text):
                pointed += 1
                assert (DOCS / page).is_file(), f"{source} points to docs/{page}, which does not exist"
                if heading:
                    assert heading in (DOCS / page).read_text(encoding="utf-8"), f"{source}: no {heading!r}"
    assert pointed >= 5


def test_no_page_names_removed_worker_classes() -> None:
    for source in [README, *pages()]:
        text = source.read_text(encoding="utf-8")
        for gone in ("FailoverMixin", "FailoverWorker", "FailoverSimpleWorker", "consumer/failover.py"):
            assert gone not in text, f"{source.name} names {gone}"


def test_configuration_page_names_every_variable_settings_reads() -> None:
    hooks = load_hooks()
    source = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert hooks.SETTINGS_MARKER in source
    page = SimpleNamespace(file=SimpleNamespace(src_uri="configuration.md"))
    generated = hooks.on_page_markdown(source, page, None, None)
    assert hooks.SETTINGS_MARKER not in generated
    rows = {line.split("|")[1].strip(" `") for line in generated.splitlines() if line.startswith("| `")}
    read = names_settings_reads()
    # The source agrees with the recording: every upper-case literal of from_env is read.
    settings_source = (ROOT / "shared" / "settings.py").read_text(encoding="utf-8")
    from_env_source = settings_source.split("def from_env", 1)[1]
    assert set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', from_env_source)) <= read
    assert len(read) > 30
    missing = read - rows
    assert not missing, f"the configuration page lacks {sorted(missing)}"


def test_configuration_table_has_no_problems() -> None:
    hooks = load_hooks()
    _, problems = hooks.settings_table()
    assert problems == []
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert hooks.environment_problems(page.replace(hooks.SETTINGS_MARKER, hooks.settings_table()[0])) == []


def sample(var: Any) -> dict[str, str]:
    """An environment that sets ``var`` to a valid value unlike its default."""
    accepts, default = var.accepts, var.default
    if accepts.startswith("integer"):
        value = str(int(accepts.split(">=")[1]) + 7 if ">=" in accepts else 7)
    elif accepts.startswith("number"):
        value = "7.5"
    elif accepts == "boolean":
        value = "0" if default == "`1`" else "1"
    elif accepts == "`host:port,...`":
        value = "h.example:7001,h.example:7002"
    elif accepts == "`queue=count,...`":
        return {var.name: "member=2", "REDIS_CLUSTER_NODES": "h.example:7001"}
    elif accepts == "comma-separated integers":
        value = "3,4,5"
    elif accepts == "comma-separated":
        value = "redis://a.example:1,redis://b.example:2"
    else:
        value = "sample-value"
    return {var.name: value}


def test_each_variable_fills_the_setting_the_table_names() -> None:
    hooks = load_hooks()
    variables = hooks.settings_variables()
    assert {var.name for var in variables} == names_settings_reads()
    defaults = Settings()
    for var in variables:
        assert var.field and var.accepts, f"{var.name}: field or format not found"
        settings = Settings.from_env(sample(var))
        assert getattr(settings, var.field) != getattr(defaults, var.field), (
            f"{var.name} should fill Settings.{var.field}"
        )


def test_openapi_list_covers_the_document_the_app_serves() -> None:
    hooks = load_hooks()
    spec = hooks.openapi_spec()
    table = hooks.openapi_table(spec)
    operations = [(method, path) for path, methods in spec["paths"].items() for method in methods]
    assert len(operations) > 15
    for method, path in operations:
        assert f"| `{method.upper()}` | `{path}` |" in table
    assert "/api/v1/redis/{key}" in spec["paths"]


def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="make docs installs requirements/docs.txt")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr
    configuration = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    for name in names_settings_reads():
        assert f"<code>{name}</code>" in configuration
    served = json.loads((site / "openapi.json").read_text(encoding="utf-8"))
    assert served["openapi"].startswith("3.1")
    assert "/queue/members" in served["paths"]
    for image in ("memory-key-steps.svg", "memory-value-steps.svg", "memory-capacity.svg"):
        assert (site / image).is_file()
