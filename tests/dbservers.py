"""Private database servers that a test or the soak may stop and start: PostgreSQL and MariaDB.

The machine's own PostgreSQL (5432) and MariaDB (3306) serve every other test and must keep
running; outage tests start their own server on a free port in a directory of their own:
PostgreSQL with ``initdb``/``pg_ctl`` from ``pg_config --bindir`` (as the ``postgres`` user
when run as root, which ``initdb`` refuses), MariaDB with ``mariadb-install-db`` and
``mariadbd``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from shared.stack import procs


def _pg_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    path = Path(out.stdout.strip())
    return path if (path / "pg_ctl").exists() and (path / "initdb").exists() else None


def postgres_available() -> bool:
    """Whether ``initdb`` and ``pg_ctl`` exist (and, as root, a ``postgres`` user to run them)."""
    if _pg_bindir() is None:
        return False
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
    return True


def mariadb_available() -> bool:
    """Whether ``mariadbd`` and ``mariadb-install-db`` exist."""
    return bool(_mariadbd() and shutil.which("mariadb-install-db"))


def _mariadbd() -> str | None:
    return shutil.which("mariadbd") or next(
        (p for p in ("/usr/sbin/mariadbd", "/usr/libexec/mariadbd") if os.access(p, os.X_OK)), None
    )


def _wait_for_port(port: int, timeout: float, what: str, log: Path) -> None:
    if not procs.wait_until(lambda: procs.port_open("127.0.0.1", port), timeout, interval=0.05):
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{what} did not start on port {port}:\n{tail}")


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of its own: ``start()``, ``stop()``, ``start()`` again, ``remove()``."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ra-pg-")))
    port: int = 0
    started: bool = False

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the cluster's ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    def _run(self, *argv: str) -> None:
        bindir = _pg_bindir()
        assert bindir is not None, "PostgreSQL's server binaries are not installed"
        command = [str(bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def init(self) -> None:
        """Create the cluster (trust authentication on loopback, no fsync: a throw-away)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chmod(self.directory, 0o755)
            shutil.chown(self.directory, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.port = self.port or procs.free_port()

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it takes connections."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")
        _wait_for_port(self.port, timeout, "PostgreSQL", self.log)
        self.started = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions are cut, as a restart by an operator does)."""
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.started = False

    def remove(self) -> None:
        """Stop the server and delete its files."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class PrivateMariaDB:
    """A MariaDB server of its own with a database ``archive``: ``start()``, ``stop()``, ``remove()``."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ra-mariadb-")))
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``archive`` database."""
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/archive"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "mariadb.log"

    def init(self) -> None:
        """Create the data directory and the ``archive`` database."""
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            "mariadb-install-db", "--no-defaults", f"--datadir={self.data}",
            "--auth-root-authentication-method=normal", "--skip-test-db",
        ]  # fmt: skip
        if os.geteuid() == 0:
            argv.append("--user=root")
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = self.port or procs.free_port()
        self.start()
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root")
        try:
            with conn.cursor() as cursor:
                cursor.execute("CREATE DATABASE IF NOT EXISTS archive")
        finally:
            conn.close()

    def start(self, timeout: float = 60.0) -> None:
        """Start ``mariadbd`` and wait until it takes connections."""
        binary = _mariadbd()
        assert binary is not None, "mariadbd is not installed"
        argv = [
            binary, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
            f"--socket={self.directory / 'mariadb.sock'}", "--bind-address=127.0.0.1",
            f"--pid-file={self.directory / 'mariadb.pid'}", f"--log-error={self.log}",
            "--innodb-buffer-pool-size=32M", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=200",
        ]  # fmt: skip
        if os.geteuid() == 0:
            argv.append("--user=root")
        self.proc = procs.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, timeout, "MariaDB", self.log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGTERM: a clean shutdown that cuts the sessions)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        """Stop the server and delete its files."""
        try:
            self.stop(signal.SIGKILL)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
