"""The InfluxDB HTTP API as the store uses it: one async client, and the requests the store
makes of it (ping, write, streamed Flux query, delete, and history reads in InfluxQL through
:attr:`Connection.influxql`), each failing with :class:`~service.core.errors.StoreUnavailable`
and a message that says what to do.

:class:`~service.storage.influx.store.InfluxStore` owns one :class:`Connection` and passes
it to the parts split out of it (:mod:`service.storage.influx.corrections`), which need
exactly these requests and nothing else of the store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import AsyncIterator

import aiohttp
import msgspec
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.dialect import Dialect
from influxdb_client.domain.query import Query
from influxdb_client.rest import ApiException
from influxdb_client.service.ping_service import PingService
from influxdb_client.service.query_service import QueryService
from influxdb_client.service.write_service import WriteService

from service.core.errors import StoreUnavailable
from service.storage.influx.admin import Admin, describe_api_error
from service.storage.influx.compose import CsvReader, QueryFailed
from service.storage.influx.influxql import InfluxQL
from service.storage.influx.retry import NETWORK_ERRORS, RetryPolicy, backoff_s, brief, is_retryable, retry_after_s

log = logging.getLogger(__name__)

# RFC3339Nano: the bar queries return _time as it is (see flux_queries), at full precision
_DIALECT = Dialect(header=True, delimiter=",", annotations=[], comment_prefix="#", date_time_format="RFC3339Nano")
_QUERY_ATTEMPTS = 3


class _Open:
    """The client and its services, which exist only inside a running event loop."""

    def __init__(self, client: InfluxDBClientAsync, admin: Admin) -> None:
        self.client = client
        self.admin = admin
        self.writes = WriteService(client.api_client)
        self.queries = QueryService(client.api_client)


# the delete API's end of time: deletes that select by predicate, not by time, run to it
END_OF_TIME_NS = 2**62


class Connection:
    def __init__(self, url: str, org: str, token: str, retry: RetryPolicy) -> None:
        self.url = url
        self.org = org
        self._token = token
        self._retry = retry
        self._rand = random.Random()
        self._open: _Open | None = None
        self.influxql = InfluxQL(url, token, retry)  # history reads (/query), opened and closed with the rest

    # --- lifecycle ----------------------------------------------------------------------

    def open(self) -> Admin:
        """Create the client (inside the running loop, as the async client requires) and
        return the bucket and task management on it."""
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._retry.connect_timeout_s, sock_read=self._retry.read_timeout_s
        )
        client = InfluxDBClientAsync(url=self.url, token=self._token, org=self.org, timeout=timeout, enable_gzip=False)
        self._open = _Open(client, Admin(client.api_client, url=self.url, org=self.org))
        self.influxql.open()
        return self._open.admin

    @property
    def is_open(self) -> bool:
        return self._open is not None

    def _require(self) -> _Open:
        if self._open is None:
            raise StoreUnavailable("the InfluxDB store is not started")
        return self._open

    @property
    def admin(self) -> Admin:
        """Bucket and task management; :class:`StoreUnavailable` before :meth:`open`."""
        return self._require().admin

    async def close(self) -> None:
        opened, self._open = self._open, None
        if opened is not None:
            await opened.client.close()
        await self.influxql.close()

    # --- requests -----------------------------------------------------------------------

    async def ping(self) -> None:
        opened = self._require()
        try:
            await PingService(opened.client.api_client).get_ping_async()
        except NETWORK_ERRORS as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url} is unreachable: {exc or type(exc).__name__}") from None
        except ApiException as exc:
            raise StoreUnavailable(describe_api_error(exc, "ping", url=self.url, org=self.org)) from None

    async def write(self, bucket: str, body: bytes, *, gzipped: bool) -> None:
        """One line-protocol body (ns precision), retried with backoff while the failure
        is worth another try (network trouble, 429, 5xx)."""
        opened = self._require()
        extra = {"content_encoding": "gzip"} if gzipped else {}
        last: BaseException | None = None
        for attempt in range(self._retry.attempts):
            try:
                await opened.writes.post_write_async(
                    org=self.org,
                    bucket=bucket,
                    body=body,
                    precision="ns",
                    content_type="text/plain; charset=utf-8",
                    **extra,
                )
                return
            except (ApiException, *NETWORK_ERRORS) as exc:
                if not is_retryable(exc):
                    assert isinstance(exc, ApiException)
                    raise StoreUnavailable(
                        describe_api_error(exc, f"write to bucket {bucket!r}", url=self.url, org=self.org)
                    ) from None
                last = exc
            if attempt + 1 < self._retry.attempts:
                delay = backoff_s(self._retry, attempt, self._rand.random(), retry_after_s(last))
                log.warning("write to %s failed (%s); retry %d in %.2fs", bucket, brief(last), attempt + 1, delay)
                await asyncio.sleep(delay)
        raise StoreUnavailable(
            f"InfluxDB at {self.url} did not take a write to bucket {bucket!r} after "
            f"{self._retry.attempts} attempts: {brief(last)}"
        )

    async def rows(self, flux: str, columns: tuple[str, ...]) -> AsyncIterator[tuple[str, ...]]:
        """Run a Flux query and stream the named columns of every row (never the whole
        response in memory). Connection trouble before the first byte is retried."""
        opened = self._require()
        query = Query(query=flux, type="flux", dialect=_DIALECT)
        response = None
        for attempt in range(_QUERY_ATTEMPTS):
            try:
                response = await opened.queries.post_query_async(
                    org=self.org, query=query, async_req=False, _preload_content=False, _return_http_data_only=True
                )
                break
            except NETWORK_ERRORS as exc:
                if attempt == _QUERY_ATTEMPTS - 1:
                    raise StoreUnavailable(f"InfluxDB at {self.url} is unreachable: {brief(exc)}") from None
                await asyncio.sleep(backoff_s(self._retry, attempt, self._rand.random()))
        assert response is not None
        try:
            if not 200 <= response.status < 300:
                body = (await response.read()).decode("utf-8", "replace")
                try:
                    message = msgspec.json.decode(body).get("message", body)
                except (msgspec.DecodeError, AttributeError):
                    message = body
                if response.status in (401, 403):
                    raise StoreUnavailable(f"InfluxDB at {self.url} refused the query ({response.status}): {message}")
                raise StoreUnavailable(f"InfluxDB query failed ({response.status}): {message}")
            reader = CsvReader(columns)
            async for raw in response.content:
                try:
                    row = reader.feed(raw.decode("utf-8"))
                except QueryFailed as exc:
                    raise StoreUnavailable(f"InfluxDB query failed: {exc}") from None
                if row is not None:
                    yield row
        except NETWORK_ERRORS as exc:
            raise StoreUnavailable(f"lost InfluxDB at {self.url} while reading a query: {brief(exc)}") from None
        finally:
            response.release()

    async def delete(self, bucket: str, start_ns: int, stop_ns: int, predicate: str) -> None:
        """``POST /api/v2/delete``: the points of ``bucket`` matching ``predicate`` with a
        time in ``[start_ns, stop_ns]`` (both ends inclusive, as the API has it)."""
        opened = self._require()
        try:
            await opened.client.delete_api().delete(
                _rfc3339(start_ns), _rfc3339(stop_ns), predicate, bucket=bucket, org=self.org
            )
        except ApiException as exc:
            raise StoreUnavailable(
                describe_api_error(exc, f"delete in bucket {bucket!r}", url=self.url, org=self.org)
            ) from None
        except NETWORK_ERRORS as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url} is unreachable: {exc}") from None


def _rfc3339(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"
