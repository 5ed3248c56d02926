"""A team's tracking server: PostgreSQL as MLflow's backend store, a 2-process DDP job logging to it over HTTP.

Uses the project's own scripts (mlflow/postgres.sh, mlflow/server.sh); `.ci/setup --test` installs PostgreSQL.
"""
from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from benchmarks._processes import free_port
from tests.engine.test_distributed import SMALL_SYNTHETIC
from tests.workspace import REPO, check_ok
from train.engine.schema import EPOCH_METRICS, GPU_ONLY_METRICS


def wait_until_healthy(url: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stdout.read()
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} not healthy after {timeout_s} s")


@pytest.fixture
def postgres_backend():
    # PostgreSQL runs as the `postgres` user when we are root: its folder must not sit under pytest's private tmp
    root = Path(tempfile.mkdtemp(prefix="cnnbench-pg-"))
    root.chmod(0o755)
    env = {**os.environ, "DATA": str(root / "data"), "PORT": str(free_port())}
    script = str(REPO / "mlflow" / "postgres.sh")
    started = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    yield started.stdout.strip()
    subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server(postgres_backend, tmp_path):
    port = free_port()
    env = {**os.environ, "BACKEND": postgres_backend, "PORT": str(port), "ARTIFACTS": str(tmp_path / "artifacts")}
    proc = subprocess.Popen(["bash", str(REPO / "mlflow" / "server.sh")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


@pytest.mark.slow
def test_ddp_job_logs_one_whole_run_to_a_postgres_backed_server(ws, server):
    assert server.startswith("http://127.0.0.1:")
    check_ok(ws.torchrun(2, *SMALL_SYNTHETIC, "--batch-size", "16", "--epochs", "2", "--tracking-uri", server))

    from mlflow import MlflowClient

    client = MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["launcher"] == "ddp" and run.data.params["world_size"] == "2"
    for name in EPOCH_METRICS - GPU_ONLY_METRICS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2], name
    assert {"num_params", "flops_per_image", "best_val_top1_err", "final_val_top1_err", "final_val_top5_err",
            "peak_mem_mib", "train_time_s"} <= set(run.data.metrics)


def test_the_postgres_store_takes_passwords_only_and_the_server_logs_in_as_no_superuser(postgres_backend):
    import psycopg

    uri = urlsplit(postgres_backend)
    passfile = Path(parse_qs(uri.query)["passfile"][0])
    assert passfile.stat().st_mode & 0o077 == 0, "the password file is readable by others"
    tcp = {"host": uri.hostname, "port": uri.port, "dbname": uri.path.lstrip("/"), "connect_timeout": 10}
    for user in ("mlflow", "postgres", getpass.getuser()):  # the server's role, and whoever owns the cluster
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(user=user, passfile=os.devnull, **tcp).close()
    with psycopg.connect(user=uri.username, passfile=str(passfile), **tcp) as conn:
        role = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user")
        assert role.fetchone() == (False, False, False)
