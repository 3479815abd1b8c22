"""The raw emails SES wrote to S3, read with aiobotocore (botocore's signing, retries and error
parsing, on the API's event loop).

What goes wrong is answered for SNS's retry rule (retries after a 5xx only): a missing object
will not appear by retrying, so it is a 4xx; S3 out of reach, slow, failing, or refusing our
credentials is a 503, so SNS tries again for up to an hour while an operator can still mend it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from api import errors
from api.errors import ApiError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
else:
    S3Client = object

log = logging.getLogger(__name__)

# Codes S3 uses for an object (or its version) that is not there. Without s3:ListBucket S3
# answers AccessDenied instead, which stays a 503: it is also what wrong credentials get.
_MISSING = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"})


class S3Objects:
    def __init__(self, client: S3Client) -> None:
        self._client = client

    async def read(self, bucket: str, key: str, max_size: int) -> bytes:
        """The object's bytes; ApiError when it is missing, too large, or S3 is unavailable."""
        where = f"s3://{bucket}/{key}"
        try:
            response = await self._client.get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            async with body:
                if response["ContentLength"] > max_size:
                    raise ApiError(
                        errors.PAYLOAD_TOO_LARGE,
                        f"{where} has {response['ContentLength']} bytes; this server accepts "
                        f"at most {max_size}.",
                    )
                return await body.read()
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise ApiError(errors.SES_OBJECT_MISSING, f"{where} does not exist.") from None
            log.warning("S3 read failed", extra={"object": where, "code": code})
            raise ApiError(errors.AWS_UNAVAILABLE, f"{where} could not be read ({code}).") from None
        except (BotoCoreError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("S3 unreachable", extra={"object": where, "error": repr(error)})
            raise ApiError(errors.AWS_UNAVAILABLE, f"{where} could not be read.") from None


@asynccontextmanager
async def s3_client(
    *, region: str | None, endpoint: str | None, connector_args: dict[str, object]
) -> AsyncIterator[S3Client]:
    """An S3 client for the application's lifetime, with AWS's usual credential chain
    (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the shared files, an instance or task role)."""
    config = AioConfig(
        # SNS waits about 15 seconds for our answer: one quick retry, then a 503 and its retry.
        connect_timeout=3,
        read_timeout=10,
        retries={"max_attempts": 2, "mode": "standard"},
        # An endpoint of our own choosing (an S3-compatible store, a test's) may not resolve
        # bucket subdomains; AWS's own endpoints take virtual-hosted requests.
        s3={"addressing_style": "path" if endpoint else "auto"},
        connector_args=connector_args,
    )
    session = get_session()
    async with session.create_client(
        "s3", region_name=region, endpoint_url=endpoint, config=config
    ) as client:
        yield client
