"""Object storage as set up by docs/cluster.md. ``s3_addressing_style`` (path-style was forced
before): validated like every setting, carried by the wiring (:func:`ooma_moh.app.open_blobs`)
into the boto3 client, and changing the URLs botocore builds. The page's list of S3 operations and
its policy: every call the store makes is on it. No network: a client's configuration is
inspectable, and a presigned URL is computed locally from fake credentials."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ooma_moh.app import open_blobs
from ooma_moh.config import Settings, load_settings
from ooma_moh.errors import ConfigError
from ooma_moh.storage.s3 import S3BlobStore

SHA = "ab" + "0" * 62


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials and region of no account, and no AWS configuration file of the machine's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_S3_ADDRESSING_STYLE"):
        monkeypatch.delenv(name, raising=False)


def store_with(tmp_path: Path, style: str | None = None) -> S3BlobStore:
    """The blob store the wiring opens for object storage (with ``style``, else the default)."""
    settings = Settings(home=tmp_path / "home", blob_url="s3://ooma-moh/prod", s3_endpoint_url="https://s3.example.com")
    store = open_blobs(settings if style is None else dataclasses.replace(settings, s3_addressing_style=style))
    assert isinstance(store, S3BlobStore)
    return store


def test_the_setting_defaults_to_path_and_refuses_other_styles() -> None:
    assert Settings().s3_addressing_style == "path"
    assert load_settings(None, environ={"OOMA_MOH_S3_ADDRESSING_STYLE": "virtual"}).s3_addressing_style == "virtual"
    with pytest.raises(ConfigError, match="s3_addressing_style must be one of path, virtual, auto"):
        Settings(s3_addressing_style="subdomain")


@pytest.mark.parametrize("style", ["path", "virtual", "auto"])
def test_the_wiring_gives_the_client_the_style(fake_aws: None, tmp_path: Path, style: str) -> None:
    assert store_with(tmp_path, style).client.meta.config.s3 == {"addressing_style": style}


def test_path_style_stays_the_default_of_the_wiring(fake_aws: None, tmp_path: Path) -> None:
    assert store_with(tmp_path).client.meta.config.s3 == {"addressing_style": "path"}


@pytest.mark.parametrize(
    ("style", "host", "path"),
    [
        ("path", "s3.example.com", f"/ooma-moh/prod/ab/{SHA}"),
        ("virtual", "ooma-moh.s3.example.com", f"/prod/ab/{SHA}"),
    ],
)
def test_the_style_decides_where_the_bucket_goes_in_the_url(
    fake_aws: None, tmp_path: Path, style: str, host: str, path: str
) -> None:
    store = store_with(tmp_path, style)
    url = urlsplit(
        store.client.generate_presigned_url("get_object", Params={"Bucket": store.bucket, "Key": store.key(SHA)})
    )
    assert (url.netloc, url.path) == (host, path)


#: each call ooma_moh/storage/s3.py makes on its boto3 client -> the S3 operations it sends
S3_OPERATIONS = {
    "head_object": {"HeadObject"},
    "list_objects_v2": {"ListObjectsV2"},
    "get_paginator": {"ListObjectsV2"},  # only ever for list_objects_v2
    "upload_file": {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"},
    "get_object": {"GetObject"},
    "copy_object": {"CopyObject"},
    "delete_object": {"DeleteObject"},
}


def test_the_documented_s3_permissions_cover_every_call_the_store_makes() -> None:
    """docs/cluster.md lists the S3 operations ooma-moh sends and the policy they need: a new
    call in storage/s3.py fails here until the page (and operators' policies) say what it needs."""
    repo = Path(__file__).resolve().parents[2]
    source = (repo / "ooma_moh" / "storage" / "s3.py").read_text()
    assert set(re.findall(r"self\.client\.(\w+)\(", source)) == set(S3_OPERATIONS)
    assert set(re.findall(r'get_paginator\("(\w+)"\)', source)) == {"list_objects_v2"}
    page = (repo / "docs" / "cluster.md").read_text()
    section = page.split("## Setting up the object storage", 1)[1].split("\n## ", 1)[0]
    for operation in set().union(*S3_OPERATIONS.values()):
        assert f"`{operation}`" in section, operation
    policy = json.loads(re.findall(r"```json\n(.*?)```", section, re.S)[0])
    allowed = {action for statement in policy["Statement"] for action in _as_list(statement["Action"])}
    assert allowed == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value
