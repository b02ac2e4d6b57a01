"""Virtual-hosted-style addressing and TLS on the S3 endpoint, both by configuration."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import ssl

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from chaos.cluster import ACCESS_KEY, SECRET_KEY, Cluster

pytestmark = pytest.mark.cluster


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_tls_and_virtual_hosted_style(tmp_path_factory):
    root = tmp_path_factory.mktemp("endpoints")
    cert, key = _self_signed(root)
    flags = ["--certfile", str(cert), "--keyfile", str(key), "--domain", "s3.cairn.test"]
    cluster = Cluster(root / "cluster", frontends=1, frontend_flags=flags)
    cluster.endpoints = [e.replace("http://", "https://") for e in cluster.endpoints]
    cluster.start()
    try:
        s3 = boto3.client("s3", endpoint_url=cluster.endpoints[0], aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1", verify=str(cert),
                          config=Config(retries={"max_attempts": 10, "mode": "standard"}))
        s3.create_bucket(Bucket="vhost")
        s3.put_object(Bucket="vhost", Key="dir/file.txt", Body=b"over TLS")
        assert s3.get_object(Bucket="vhost", Key="dir/file.txt")["Body"].read() == b"over TLS"
        # the same object, addressed as https://vhost.s3.cairn.test/dir/file.txt
        port = int(cluster.endpoints[0].rsplit(":", 1)[1])
        url = f"https://vhost.s3.cairn.test:{port}/dir/file.txt"
        req = AWSRequest("GET", url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        host = {"Host": f"vhost.s3.cairn.test:{port}"}
        conn.request("GET", "/dir/file.txt", headers={**dict(req.headers.items()), **host})
        reply = conn.getresponse()
        assert reply.status == 200 and reply.read() == b"over TLS"
        listed = _signed("GET", f"https://vhost.s3.cairn.test:{port}/?list-type=2")
        conn.request("GET", "/?list-type=2", headers={**dict(listed.items()), **host})
        listing = conn.getresponse().read()
        assert b"<Key>dir/file.txt</Key>" in listing
    finally:
        cluster.stop()


def _signed(method: str, url: str):
    req = AWSRequest(method, url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    return req.headers
