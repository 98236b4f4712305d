"""MkDocs hooks (``hooks:`` in mkdocs.yml): the parts of the site generated from the code.

- ``<!-- settings-table -->`` (configuration.md) becomes a table of every environment variable
  :meth:`shared.settings.Settings.from_env` reads: the setting it fills, the format it accepts
  and its default come from the code; the meaning comes from :data:`MEANINGS`. A variable with
  no meaning, a meaning for a variable nothing reads, or a variable read elsewhere in
  ``producer/``, ``consumer/`` or ``shared/`` that the page does not name is a warning, so
  ``mkdocs build --strict`` fails until the page says what it is.
- ``<!-- openapi-table -->`` (cache-api.md) becomes the list of the producer's endpoints, and
  ``openapi.json`` is written beside the pages: both from the document the app serves,
  :func:`producer.openapi.build_spec` of an app built by :func:`producer.create_app`.

The generating functions need only the project; MkDocs is imported inside the hooks that use it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import logging
import re
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MARKER = "<!-- settings-table -->"
OPENAPI_MARKER = "<!-- openapi-table -->"
OPENAPI_FILE = "openapi.json"
#: Packages whose other environment reads the configuration page must name.
CODE_PACKAGES = ("producer", "consumer", "shared")

log = logging.getLogger("mkdocs.hooks.redis_archive")

#: What each variable of ``Settings.from_env`` means: the text, or (default in words, text)
#: where the code's default is "unset" but means something.
MEANINGS: dict[str, str | tuple[str, str]] = {
    "REDIS_URL": "the queue's Redis (`redis://`, `rediss://` for TLS, `unix://`)",
    "CACHE_REDIS_URL": (
        "the queue's Redis",
        "Redis for the cache API, e.g. one with an evicting `maxmemory-policy` ([Cache API](cache-api.md))",
    ),
    "DATABASE_URL": (
        "SQLAlchemy URL; `postgresql+psycopg://...` or `mysql+pymysql://...` with the "
        "`postgres`/`mysql` extras"
    ),
    "MAX_BODY_BYTES": (
        "request body limit (413 above it); `POST /api/v1/redis` allows "
        "`2 x CACHE_MAX_VALUE_BYTES + MAX_BODY_BYTES`"
    ),
    "CACHE_MAX_VALUE_BYTES": "largest cache value, as compact UTF-8 JSON (422 above it)",
    "API_TOKEN": "bearer token required by every endpoint except `/healthz` and `/readyz`",
    "JOB_ATTEMPTS": "attempts per job",
    "RETRY_INTERVALS": "seconds between attempts",
    "JOB_TIMEOUT": "seconds a job may run",
    "RESULT_TTL": "seconds a finished job and its result are kept (`-1`: kept for good)",
    "FAILURE_TTL": "seconds a failed job is kept",
    "ALERT_WEBHOOK_URL": "where alerts of jobs that failed for good are POSTed",
    "LOCK_REDIS_URLS": (
        "the queue's Redis",
        "independent Redis masters of the distributed lock (3 or 5 for fault tolerance; [Lock](lock.md))",
    ),
    "REDIS_PASSWORD": "password of the queue's Redis (and its replicas)",
    "REDIS_SOCKET_TIMEOUT": "seconds a Redis command may wait for its reply",
    "REDIS_CLUSTER_NODES": (
        "Redis Cluster seed nodes; when set, the queue's Redis is the cluster ([Redis Cluster](cluster.md))"
    ),
    "QUEUE_NAMESPACES": (
        "one namespace per queue",
        "how many namespaces each queue spreads over (`member=3,goods=1`); needs `REDIS_CLUSTER_NODES`",
    ),
    "REDIS_SENTINELS": "Sentinels; when set they find the master ([High availability](high-availability.md))",
    "REDIS_SENTINEL_MASTER": "the Sentinels' service name of the master",
    "REDIS_SENTINEL_PASSWORD": "the Sentinels' own password",
    "REDIS_SENTINEL_TLS": "TLS to the Sentinels (the master's TLS follows `rediss://` in `REDIS_URL`)",
    "REDIS_TLS_CA_CERTS": "CA bundle for TLS connections",
    "REDIS_TLS_CERTFILE": "client certificate for TLS connections",
    "REDIS_TLS_KEYFILE": "client key for TLS connections",
    "ENQUEUE_RETRY_SECONDS": "how long an enqueue retries connection and `READONLY` errors before `503`",
    "ENQUEUE_MIN_REPLICAS": "durable enqueue: replicas that must have a job before `202`",
    "ENQUEUE_REPLICA_TIMEOUT_MS": "durable enqueue: how long `WAIT` waits for them",
    "WORKER_MASTER_TIMEOUT": (
        "how long a worker rides out a Redis outage (no master, a restart, `READONLY`, a full Redis): "
        "`FastWorker` then exits with status 69, a plain rq worker (`rq worker -c consumer.settings`) "
        "with status 1 and the reason"
    ),
    "DB_RETRY_SECONDS": (
        "how long a job that cannot reach its database (refused, restarting, failing over, lock wait "
        "timeout, deadlock) keeps retrying without spending an attempt; after that the error counts "
        "as a failed attempt"
    ),
    "ALLOW_EVICTING_POLICY": (
        "lets the producer and workers start on a Redis whose `maxmemory-policy` can evict queued jobs"
    ),
    "LOG_LEVEL": "level of the project's loggers",
    "HEARTBEAT_TIMEOUT": (
        "seconds after a worker's death within which its jobs are back in their queue ([Worker](worker.md))"
    ),
    "WORKER_CONCURRENCY": "jobs a `FastWorker` runs at once, on threads (for I/O-bound jobs)",
    "WORKER_BATCH": (
        "jobs a `FastWorker` claims per round trip; above 1 it claims the next batch while one runs "
        "(up to twice this many count as started)"
    ),
    "DASHBOARD_USER": "dashboard login name",
    "DASHBOARD_PASSWORD": "dashboard password; with no password and no `API_TOKEN` the dashboard is closed",
    "DASHBOARD_READ_ONLY": "hide and refuse the dashboard's actions",
    "MEMORY_SAMPLE_SECONDS": "seconds between the producer's `INFO memory` samples; `0` turns them off",
}

#: What a parser in shared/settings.py accepts, by the parser's name.
FORMATS = {
    "parse_host_ports": "`host:port,...`",
    "parse_counts": "`queue=count,...`",
    "_list": "comma-separated",
    "_int": "integer",
    "_float": "number",
    "_bool": "boolean",
}
#: The format of the variables in each name table of ``from_env``, by the table's name.
TABLE_FORMATS = {"text": "text", "ints": "integer", "floats": "number", "bools": "boolean"}


class Variable(NamedTuple):
    """One environment variable ``Settings.from_env`` reads."""

    name: str
    #: The ``Settings`` field it fills ("" when the code's shape was not recognised).
    field: str
    #: What it accepts, in words ("" when not recognised).
    accepts: str
    default: str


class _Recorder(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __getitem__(self, name: str) -> str:
        self.names.append(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def names_read() -> list[str]:
    """Every variable ``Settings.from_env`` looks up in an empty environment, in order."""
    from shared.settings import Settings

    recorder = _Recorder()
    Settings.from_env(recorder)
    return list(dict.fromkeys(recorder.names))


def _parser_format(node: ast.AST) -> str:
    """What the parser calls inside ``node`` accept (``_int`` in ``_list``: comma-separated integers)."""
    called = {
        sub.func.id for sub in ast.walk(node) if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name)
    }
    if {"_list", "_int"} <= called:
        return "comma-separated integers"
    for parser, words in FORMATS.items():
        if parser in called:
            return words
    return ""


def _mapping_from_source() -> dict[str, tuple[str, str]]:
    """Variable -> (field, format), read from the source of ``Settings.from_env``.

    Two shapes: name tables (``{"PORT": ("port", 1)}`` in a dict called ``ints``) and a
    variable fetched alone (``x = get("REDIS_SENTINELS")``, then ``kwargs["sentinels"] = ... x ...``).
    """
    from shared.settings import Settings

    tree = ast.parse(textwrap.dedent(inspect.getsource(Settings.from_env)))
    found: dict[str, tuple[str, str]] = {}
    fetched: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Name) and isinstance(value, ast.Dict):
            kind = TABLE_FORMATS.get(target.id, "")
            for key, item in zip(value.keys, value.values, strict=True):
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    continue
                accepts = kind
                if isinstance(item, ast.Tuple) and item.elts and isinstance(item.elts[0], ast.Constant):
                    field_name = str(item.elts[0].value)
                    if len(item.elts) > 1:
                        accepts = f"{kind} >= {ast.literal_eval(item.elts[1]):g}"
                elif isinstance(item, ast.Constant):
                    field_name = str(item.value)
                else:
                    continue
                found[key.value] = (field_name, accepts)
        elif (
            isinstance(target, ast.Name)
            and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "get"
            and value.args
            and isinstance(value.args[0], ast.Constant)
        ):
            fetched[target.id] = str(value.args[0].value)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (
            isinstance(target, ast.Subscript)
            and isinstance(target.value, ast.Name)
            and target.value.id == "kwargs"
            and isinstance(target.slice, ast.Constant)
        ):
            continue
        used = {sub.id for sub in ast.walk(node.value) if isinstance(sub, ast.Name)}
        for local, var in fetched.items():
            if local in used:
                found[var] = (str(target.slice.value), _parser_format(node.value))
    return found


def _default_words(value: Any) -> str:
    """A field's default as it would be written in the environment."""
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, tuple):
        return "`" + ",".join(str(item) for item in value) + "`"
    return f"`{value}`"


def settings_variables() -> list[Variable]:
    """Every variable ``Settings.from_env`` reads, with its field, format and default."""
    from shared.settings import Settings

    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    mapping = _mapping_from_source()
    names = sorted({*names_read(), *mapping})
    variables = []
    for name in names:
        field_name, accepts = mapping.get(name, ("", ""))
        default = _default_words(defaults[field_name]) if field_name in defaults else ""
        variables.append(Variable(name, field_name, accepts, default))
    return variables


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table() -> tuple[str, list[str]]:
    """The Markdown table of :func:`settings_variables`, and the problems found on the way."""
    problems = []
    rows = [
        "| variable | setting | accepts | default | meaning |",
        "|---|---|---|---|---|",
    ]
    variables = settings_variables()
    for var in variables:
        meaning = MEANINGS.get(var.name)
        default = var.default
        if isinstance(meaning, tuple):
            # The code's "unset" means something: say what.
            words, meaning = meaning
            default = words if default == "unset" else f"{words} ({default})"
        if meaning is None:
            problems.append(f"{var.name}: Settings.from_env reads it; docs/hooks.py MEANINGS lacks it")
            meaning = ""
        if not var.field:
            problems.append(f"{var.name}: no Settings field found for it in the source of Settings.from_env")
        field_cell = f"`{var.field}`" if var.field else ""
        rows.append(
            f"| `{var.name}` | {field_cell} | {_cell(var.accepts)} | {_cell(default)} | {_cell(meaning)} |"
        )
    read = {var.name for var in variables}
    for name in sorted(set(MEANINGS) - read):
        problems.append(f"{name}: docs/hooks.py MEANINGS describes it, Settings.from_env does not read it")
    return "\n".join(rows) + "\n", problems


#: Environment reads in code: ``os.environ.get("X")``, ``os.environ["X"]``, ``os.getenv("X")``,
#: click's ``envvar="X"``, and constants named ``*_ENV = "X"``.
_ENV_READ = re.compile(
    r"""(?:environ(?:\.get)?\s*[\[(]\s*|getenv\(\s*|envvar\s*=\s*|^[A-Z_]*_ENV\s*=\s*)["']([A-Z][A-Z0-9_]+)["']""",
    re.MULTILINE,
)
#: WSGI environ keys (and request headers, ``HTTP_*``), not environment variables.
_WSGI_KEYS = {
    "PATH_INFO",
    "RAW_URI",
    "REQUEST_URI",
    "SCRIPT_NAME",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "REMOTE_ADDR",
    "REQUEST_METHOD",
}


def environment_reads(root: Path = ROOT) -> dict[str, list[str]]:
    """Environment variables read in the code's packages, with the files that read each."""
    reads: dict[str, list[str]] = {}
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for name in _ENV_READ.findall(path.read_text(encoding="utf-8")):
                if name not in _WSGI_KEYS and not name.startswith("HTTP_"):
                    reads.setdefault(name, []).append(str(path.relative_to(root)))
    return reads


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Hold back the warnings of ``names`` (an app built with no Redis says it cannot reach one)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document the producer serves at ``/openapi.json`` (no ``API_TOKEN``).

    The app is built on a Redis that does not exist and an in-memory SQLite: the document
    depends only on the routes and their models.
    """
    from producer import create_app
    from producer.openapi import build_spec
    from shared.settings import Settings

    settings = Settings(redis_url="unix:///nonexistent/redis-archive-docs.sock", database_url="sqlite://")
    with _quiet("shared.connections.eviction"):
        app = create_app({**asdict(settings), "TESTING": True, "BACKGROUND_THREAD": False})
    return build_spec(app)


def openapi_table(spec: Mapping[str, Any]) -> str:
    """One row per operation of ``spec``: method, path, summary and the statuses it answers."""
    rows = ["| method | path | what | answers |", "|---|---|---|---|"]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            statuses = ", ".join(sorted(op["responses"]))
            rows.append(f"| `{method.upper()}` | `{path}` | {_cell(op['summary'])} | {statuses} |")
    return "\n".join(rows) + "\n"


def environment_problems(markdown: str) -> list[str]:
    """Variables the code reads that a configuration page in ``markdown`` does not name."""
    return [
        f"{name}: read in {', '.join(sorted(set(paths)))}, not named on the configuration page"
        for name, paths in sorted(environment_reads().items())
        if f"`{name}`" not in markdown
    ]


# MkDocs events.

_spec_cache: dict[str, dict[str, Any]] = {}


def _spec() -> dict[str, Any]:
    """The document of this build (:func:`on_files` builds it first)."""
    if "spec" not in _spec_cache:
        _spec_cache["spec"] = openapi_spec()
    return _spec_cache["spec"]


def on_files(files: Any, config: Any) -> Any:
    """Add ``openapi.json``, generated from the app, to the site."""
    from mkdocs.structure.files import File

    _spec_cache["spec"] = openapi_spec()
    content = json.dumps(_spec(), indent=2) + "\n"
    files.append(File.generated(config, OPENAPI_FILE, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill in the generated tables; warn (an error under --strict) about anything undocumented."""
    if SETTINGS_MARKER in markdown:
        table, problems = settings_table()
        markdown = markdown.replace(SETTINGS_MARKER, table)
        for problem in problems + environment_problems(markdown):
            log.warning("%s: %s", page.file.src_uri, problem)
    if OPENAPI_MARKER in markdown:
        markdown = markdown.replace(OPENAPI_MARKER, openapi_table(_spec()))
    return markdown
