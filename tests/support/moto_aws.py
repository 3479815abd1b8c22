"""Amazon S3 and SNS on loopback: moto's server (its real HTTP API, SigV4 and all) in a thread.

The server under test reaches it through OPENSEND_SES_S3_ENDPOINT; the tests drive it with
aiobotocore, the library the server uses, so nothing blocks the event loop. Credentials are
moto's test values: it accepts any.

    async with moto_server() as aws:
        await aws.put_object("inbound-mail", "abc123", raw)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
else:
    S3Client = Any

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# What the server under test needs in its environment to sign requests to moto. Metadata off:
# without it botocore may look for an instance role at 169.254.169.254, which is not loopback.
CREDENTIAL_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class MotoAws:
    server: ThreadedMotoServer
    endpoint: str
    s3: S3Client
    sns: Any  # types-aiobotocore-sns is not installed; only publish and friends are used
    stopped: bool = False

    async def put_object(self, bucket: str, key: str, content: bytes) -> None:
        await self.s3.put_object(Bucket=bucket, Key=key, Body=content)

    async def create_bucket(self, bucket: str) -> None:
        await self.s3.create_bucket(Bucket=bucket)

    async def stop(self) -> None:
        """S3 and SNS go away: connections to the endpoint are refused from now on."""
        if not self.stopped:
            self.stopped = True
            await asyncio.to_thread(self.server.stop)


@asynccontextmanager
async def moto_server() -> AsyncIterator[MotoAws]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    await asyncio.to_thread(server.start)
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    session = get_session()
    async with AsyncExitStack() as clients:
        s3 = await clients.enter_async_context(
            session.create_client("s3", region_name=REGION, endpoint_url=endpoint, **CREDENTIALS)
        )
        sns = await clients.enter_async_context(
            session.create_client("sns", region_name=REGION, endpoint_url=endpoint, **CREDENTIALS)
        )
        aws = MotoAws(server, endpoint, s3, sns)
        try:
            yield aws
        finally:
            await aws.stop()
