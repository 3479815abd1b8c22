"""One transaction's way through the hosts of a route (RFC 5321 section 5.1).

The hosts are tried in the route's order until one holds a transaction: a host that cannot be
reached or will not talk is skipped, and the recipients a host deferred are offered to the next
one (`policy.delivery.result.another_host_may_take`), as Postfix keeps soft-failed recipients
for a backup MX. Each recipient's answer comes with the name of the host that gave it.
"""

from __future__ import annotations

from mta import metrics
from mta.delivery.routes import Hop, Route
from mta.delivery.smtp_client import SessionFailed
from mta.delivery.smtp_pool import PoolClosed, SmtpPool
from policy.delivery import result as results
from policy.delivery.result import SmtpAnswer, Stage, another_host_may_take

Answers = dict[str, SmtpAnswer]
RemoteHosts = dict[str, str]  # recipient -> the host whose answer it has

# Sessions that reached a transaction, per transaction: what one host deferred is offered to
# one more (Postfix's smtp_mx_session_limit, 2 by default). With VERP every recipient has a
# transaction of its own, so this counts per recipient there. The addresses tried in all are
# bounded by the route itself (mta.delivery.routes.MAX_MX_ADDRESSES).
MX_SESSION_LIMIT = 2


async def transact(
    smtp: SmtpPool, route: Route, sender: str, recipients: list[str], content: bytes
) -> tuple[Answers, RemoteHosts]:
    """Every recipient's answer, and the host that gave it when one did. Raises PoolClosed
    only when stopping before any host answered."""
    answers: Answers = {}
    hosts: RemoteHosts = {}
    pending = recipients
    sessions = 0
    last = SmtpAnswer.ours(results.NO_ANSWER, Stage.CONNECT)
    for hop in _in_order(smtp, route):
        try:
            held = await _transact_on(smtp, hop, sender, pending, content)
        except PoolClosed:
            if not answers:
                raise
            break  # stopping: the first host's answers stand, its deferrals with them
        if isinstance(held, SmtpAnswer):  # no session with this host: the next one
            last = held
            continue
        one, host = held
        if sessions:  # a host after one that deferred these recipients
            metrics.DELIVERY_BACKUP_RECIPIENTS.inc(len(one))
        answers.update(one)
        hosts.update(dict.fromkeys(one, host))
        sessions += 1
        pending = [r for r in pending if another_host_may_take(one[r])]
        if not pending or sessions >= MX_SESSION_LIMIT:
            break
    for recipient in pending:  # a deferral from a host beats "the next one was down"
        answers.setdefault(recipient, last)
    return answers, hosts


def _in_order(smtp: SmtpPool, route: Route) -> list[Hop]:
    """The route's order, except that hosts which just failed to connect go last (the sort is
    stable), still tried in case every host is down. RFC 5321 section 5.1 lets a client prefer
    a host it can reach among equals; putting a dead one behind less preferred hosts goes
    further, as Exim's per-host retry records do: otherwise every message to a domain whose
    primary is down waits out the same connect timeout before it reaches the backup."""
    return sorted(route.hops, key=smtp.unreachable)


async def _transact_on(
    smtp: SmtpPool, hop: Hop, sender: str, recipients: list[str], content: bytes
) -> tuple[Answers, str] | SmtpAnswer:
    """One host's answers and its name, or why no session with it held a transaction."""
    failure = SmtpAnswer.ours(results.NO_ANSWER, Stage.CONNECT)
    for _ in range(2):  # a reused session found dead before any reply: once more, fresh
        try:
            session, reused = await smtp.acquire(hop)
        except SessionFailed as failed:
            metrics.DELIVERY_CONNECTIONS.labels("failed").inc()
            return failed.answer
        metrics.DELIVERY_CONNECTIONS.labels("reused" if reused else "opened").inc()
        try:
            answers = await session.send(sender, recipients, content)
        finally:
            await smtp.release(session)
        if reused and all(not a.remote and a.stage is Stage.MAIL for a in answers.values()):
            failure = next(iter(answers.values()))
            continue
        return answers, session.remote_host
    return failure
