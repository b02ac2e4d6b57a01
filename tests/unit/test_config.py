"""Role configuration: flags, a TOML file and the environment."""

from __future__ import annotations

import pytest

from core import config


def test_flags(monkeypatch):
    monkeypatch.setenv("CAIRN_CLUSTER_SECRET", "s3cret")
    args = config.parse_role("raftmeta", ["--raft", "10.0.0.1:7001", "--peers", "10.0.0.2:7001, 10.0.0.3:7001",
                                          "--rpc", "10.0.0.1:7101"])
    assert args.peers == ["10.0.0.2:7001", "10.0.0.3:7001"]
    assert args.secret == "s3cret"


def test_config_file_and_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("CAIRN_CLUSTER_SECRET", raising=False)
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    cfg = tmp_path / "cairn.toml"
    cfg.write_text(
        f'[cluster]\nmeta = ["m1:7101", "m2:7101", "m3:7101"]\nsecret_file = "{secret}"\n'
        '[frontend]\nlisten = "0.0.0.0:9000"\nchunk_size = 4194304\nwrite_quorum = 3\n'
    )
    args = config.parse_role("frontend", ["--config", str(cfg), "--write-quorum", "2"])
    assert args.meta == ["m1:7101", "m2:7101", "m3:7101"]
    assert args.listen == "0.0.0.0:9000"
    assert args.chunk_size == 4194304
    assert args.write_quorum == 2  # the flag wins over the file
    assert args.secret == "from-file"


def test_missing_required_and_secret(monkeypatch):
    monkeypatch.delenv("CAIRN_CLUSTER_SECRET", raising=False)
    with pytest.raises(SystemExit):
        config.parse_role("blobnode", ["--listen", "h:1"])  # no --meta
    with pytest.raises(SystemExit):
        config.parse_role("blobnode", ["--listen", "h:1", "--meta", "m:1"])  # no secret anywhere


def test_root_credentials(monkeypatch):
    monkeypatch.delenv("CAIRN_ROOT_ACCESS_KEY", raising=False)
    monkeypatch.delenv("CAIRN_ROOT_SECRET_KEY", raising=False)
    assert config.root_credentials() == (config.DEFAULT_ROOT_ACCESS_KEY, config.DEFAULT_ROOT_SECRET_KEY)
    monkeypatch.setenv("CAIRN_ROOT_ACCESS_KEY", "me")
    monkeypatch.setenv("CAIRN_ROOT_SECRET_KEY", "mine")
    assert config.root_credentials() == ("me", "mine")


def test_secret_file_made_once(tmp_path):
    path = str(tmp_path / "cluster.secret")
    first = config.ensure_secret_file(path)
    assert len(first) >= 32 and config.ensure_secret_file(path) == first
