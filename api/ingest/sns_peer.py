"""What the SES ingester asks of Amazon SNS over HTTPS: signing certificates and confirmations.

Only URLs that `policy.aws.sns` allowed reach here, already in parts; redirects are not followed (a
redirect could lead off the allowed hosts). A certificate's key is kept per URL: SNS names each
certificate by a URL of its own, so what one serves does not change.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from api import errors
from api.errors import ApiError
from policy.aws import sns
from policy.aws.sns import HttpsUrl

log = logging.getLogger(__name__)

# SNS waits about 15 seconds for our answer; a fetch must leave time for the rest.
FETCH_TIMEOUT = aiohttp.ClientTimeout(total=5)
# A signing certificate is about 2 KB, a confirmation's answer less; much more is neither.
MAX_BODY_BYTES = 64 * 1024
# SNS signs with a handful of certificates at a time (one per region and rotation).
CACHED_KEYS = 32


class SnsPeer:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._keys: OrderedDict[HttpsUrl, rsa.RSAPublicKey] = OrderedDict()

    async def signing_key(self, url: HttpsUrl) -> rsa.RSAPublicKey:
        """The key of the certificate at `url`: cached, else fetched and parsed."""
        key = self._keys.get(url)
        if key is not None:
            self._keys.move_to_end(url)
            return key
        status, body = await self._get(url, "SigningCertURL")
        if status != 200:
            raise ApiError(errors.SNS_UNTRUSTED, f"SigningCertURL {url} answered HTTP {status}.")
        key = sns.signing_key(body)  # a Refusal for anything but an RSA certificate
        self._keys[url] = key
        while len(self._keys) > CACHED_KEYS:
            self._keys.popitem(last=False)
        return key

    async def confirm_subscription(self, url: HttpsUrl) -> None:
        """Visit the SubscribeURL, which is how an HTTPS endpoint confirms its subscription."""
        status, _body = await self._get(url, "SubscribeURL")
        if status != 200:
            raise ApiError(
                errors.SNS_CONFIRMATION_REFUSED,
                f"Amazon SNS answered HTTP {status} to the subscription confirmation.",
            )

    async def _get(self, url: HttpsUrl, what: str) -> tuple[int, bytes]:
        """GET the URL; SNS out of reach or failing (5xx) is a 503, which SNS will retry."""
        target = URL.build(
            scheme="https",
            host=url.host,
            port=url.port,
            path=url.path,
            query_string=url.query,
            encoded=True,
        )
        try:
            async with self._session.get(
                target, allow_redirects=False, timeout=FETCH_TIMEOUT
            ) as response:
                status = response.status
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise ApiError(
                            errors.SNS_UNTRUSTED, f"{what} {url} served more than a certificate."
                        )
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("SNS fetch failed", extra={"url": str(url), "error": repr(error)})
            raise ApiError(errors.AWS_UNAVAILABLE, f"{what} {url} could not be fetched.") from None
        if status >= 500:
            log.warning("SNS fetch failed", extra={"url": str(url), "status": status})
            raise ApiError(errors.AWS_UNAVAILABLE, f"{what} {url} answered HTTP {status}.")
        return status, bytes(body)
