"""A real S3-compatible server for the artifact store's tests: moto's standalone server over HTTP.

moto is started as its own process (``python -m moto.server``) on a free loopback port, with IAM
authentication on: ``INITIAL_NO_AUTH_ACTION_COUNT`` lets the first requests through unsigned (they
create a user, its policy and its access key through the IAM API), and every request after them
must be signed with a key moto knows, or it is refused with 403, as AWS would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3

from tests.integration.local_servers import free_port

BUCKET = "aios-artifacts"
SETUP_REQUESTS = 3  # create_user, put_user_policy, create_access_key: unsigned, then auth is enforced
ALLOW_S3 = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str


class MotoS3:
    """``with MotoS3(directory) as s3:`` a server with bucket BUCKET and a user allowed to use it."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "moto.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.credentials = S3Credentials("", "")

    def __enter__(self) -> MotoS3:
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS), "MOTO_CALL_RESET_API": "false"}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"moto's S3 server did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        iam = self.client("iam", S3Credentials("setup", "setup"))
        iam.create_user(UserName="aios")
        iam.put_user_policy(UserName="aios", PolicyName="artifacts", PolicyDocument=json.dumps(ALLOW_S3))
        key = iam.create_access_key(UserName="aios")["AccessKey"]
        self.credentials = S3Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        self.s3().create_bucket(Bucket=BUCKET)  # signed: authentication is on from here
        return self

    def client(self, service: str, credentials: S3Credentials) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=credentials.access_key_id,
                            aws_secret_access_key=credentials.secret_access_key)

    def s3(self) -> Any:
        """boto3's S3 client with the user's key: the tests' independent view of the bucket."""
        return self.client("s3", self.credentials)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
