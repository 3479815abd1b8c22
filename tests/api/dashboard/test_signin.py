"""Dashboard sign-in over plain HTTP: the session cookie's attributes, sessions listed and
revoked, CSRF and Origin on every unsafe request, and failed sign-ins slowed then locked out."""

from __future__ import annotations

import asyncio

from policy.dashboard.account_limits import FIRST_WAIT_SECONDS, FREE_FAILURES
from tests.api.dashboard.support import PASSWORD, make_user, reader, session
from tests.conftest import ApiServer, MakeTenant, StartApi

# An API of its own for each lockout test: the failures it counts must not lock others out.
THIRD_FAILURE_LOCKS_OUT = {
    "OPENSEND_AUTH_MAX_FAILURES": "3",
    "OPENSEND_AUTH_FAILURE_DELAY": "0",
    "OPENSEND_AUTH_LOCKOUT": "15m",
}


async def test_a_page_without_a_session_sends_the_reader_to_sign_in(api: ApiServer) -> None:
    async with session() as http:
        page = await reader(api.url, http).get("/dashboard/emails")
    assert page.status == 303
    assert page.location == "/dashboard/login?next=/dashboard/emails"


async def test_signing_in_sets_a_host_only_secure_httponly_lax_cookie(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    email = await make_user(await make_tenant())
    async with session() as http:
        me = reader(api.url, http)
        page = await me.sign_in(email)
        assert page.location == "/dashboard/emails"
        session_cookie, device_cookie = me.last_set_cookie
        assert session_cookie.startswith("__Host-opensend_session=")
        assert device_cookie.startswith("__Host-opensend_device=")
        for set_cookie in (session_cookie, device_cookie):
            attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")}
            assert {"secure", "httponly", "samesite", "path"} <= attributes
            assert "domain" not in attributes
            assert "SameSite=Lax" in set_cookie and "Path=/" in set_cookie
        emails = await me.get("/dashboard/emails")
    assert emails.status == 200
    assert email in emails.text


async def test_a_wrong_password_is_refused_401_and_sets_no_cookie(
    start_test_api: StartApi, make_tenant: MakeTenant
) -> None:
    # An API of its own: the failures it counts must not lock other tests' logins out.
    api = await start_test_api(OPENSEND_AUTH_FAILURE_DELAY="0")
    email = await make_user(await make_tenant())
    async with session() as http:
        me = reader(api.url, http)
        page = await me.post("/dashboard/login", {"email": email, "password": "wrong" + PASSWORD})
        assert page.status == 401
        assert "Wrong email address, password or code." in page.text
        assert me.last_set_cookie == []
        unknown = await me.post(
            "/dashboard/login", {"email": "nobody@example.net", "password": PASSWORD}
        )
    assert unknown.status == 401  # the same answer: whether an address exists is not told


async def test_sign_in_from_another_origin_is_refused_403(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    email = await make_user(await make_tenant())
    async with session() as http:
        me = reader(api.url, http)
        form = {"email": email, "password": PASSWORD}
        elsewhere = await me.post("/dashboard/login", form, origin="https://evil.example")
        missing = await me.post("/dashboard/login", form, origin=None)
    assert elsewhere.status == missing.status == 403
    assert me.cookie is None


async def test_a_form_without_the_csrf_token_or_from_another_origin_is_refused(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    email = await make_user(await make_tenant())
    async with session() as http:
        me = reader(api.url, http)
        await me.sign_in(email)
        csrf = (await me.get("/dashboard/api-keys")).csrf
        no_token = await me.post("/dashboard/api-keys", {"name": "x"})
        wrong_token = await me.post("/dashboard/api-keys", {"name": "x", "csrf_token": "nope"})
        cross_site = await me.post(
            "/dashboard/api-keys", {"name": "x", "csrf_token": csrf}, origin="http://evil.test"
        )
        keys = await me.get("/dashboard/api-keys")
        good = await me.post("/dashboard/api-keys", {"name": "mine", "csrf_token": csrf})
    assert no_token.status == wrong_token.status == cross_site.status == 403
    assert "did not come from a page of this dashboard" in no_token.text
    assert "<strong>x</strong>" not in keys.text  # none of the refused forms made a key
    assert good.status == 200


async def test_a_revoked_session_cookie_stops_working_at_once(
    api: ApiServer, make_tenant: MakeTenant
) -> None:
    email = await make_user(await make_tenant())
    async with session() as laptop_http, session() as phone_http:
        laptop, phone = reader(api.url, laptop_http), reader(api.url, phone_http)
        await laptop.sign_in(email)
        await phone.sign_in(email)
        listed = await laptop.get("/dashboard/sessions")
        assert listed.text.count("/revoke") == 2
        stolen = phone.cookie
        # The laptop revokes the phone's session: the one not marked as "this session".
        rows = listed.text.split("<li data-item")
        [other] = [row for row in rows[1:] if "this session" not in row]
        phone_id = other.split("/dashboard/sessions/")[1].split("/revoke")[0]
        revoked = await laptop.post(
            f"/dashboard/sessions/{phone_id}/revoke", {"csrf_token": listed.csrf}
        )
        assert revoked.status == 303
        phone.cookie = stolen
        after = await phone.get("/dashboard/emails")
        still = await laptop.get("/dashboard/emails")
    assert after.status == 303 and after.location is not None
    assert after.location.startswith("/dashboard/login")
    assert still.status == 200


async def test_signing_out_ends_the_session(api: ApiServer, make_tenant: MakeTenant) -> None:
    email = await make_user(await make_tenant())
    async with session() as http:
        me = reader(api.url, http)
        await me.sign_in(email)
        cookie = me.cookie
        csrf = (await me.get("/dashboard/emails")).csrf
        out = await me.post("/dashboard/logout", {"csrf_token": csrf})
        me.cookie = cookie  # a copy of the cookie kept from before
        after = await me.get("/dashboard/emails")
    assert out.status == 303 and out.location == "/dashboard/login"
    assert after.status == 303


async def test_failed_sign_ins_lock_the_address_out_even_for_the_right_password(
    start_test_api: StartApi, make_tenant: MakeTenant
) -> None:
    api = await start_test_api(**THIRD_FAILURE_LOCKS_OUT)
    email = await make_user(await make_tenant())
    async with session() as http:
        me = reader(api.url, http)
        wrong = {"email": email, "password": "not the password"}
        first = await me.post("/dashboard/login", wrong)
        second = await me.post("/dashboard/login", wrong)
        third = await me.post("/dashboard/login", wrong)
        right = await me.post("/dashboard/login", {"email": email, "password": PASSWORD})
    assert (first.status, second.status, third.status) == (401, 401, 429)
    assert right.status == 429
    assert "Too many failed sign-ins" in right.text
    assert me.cookie is None


async def test_sign_ins_sent_together_are_checked_no_more_than_the_failures_allowed(
    start_test_api: StartApi, make_tenant: MakeTenant
) -> None:
    """A password check takes a while (argon2): without a count of those under way, thirty
    guesses sent at once were all checked before the first failure counted."""
    api = await start_test_api(**THIRD_FAILURE_LOCKS_OUT)
    email = await make_user(await make_tenant())
    async with session() as http:
        me = reader(api.url, http)
        wrong = {"email": email, "password": "not the password"}
        guesses = await asyncio.gather(*(me.post("/dashboard/login", wrong) for _ in range(30)))
        right = await me.post("/dashboard/login", {"email": email, "password": PASSWORD})
    checked = [page for page in guesses if "Wrong email address" in page.text]
    refused = [page for page in guesses if page.status == 429]
    assert len(checked) <= 2 and len(checked) + len(refused) == 30  # the third locks out
    assert any("at once" in page.text for page in refused)
    assert right.status == 429 and me.cookie is None


async def test_behind_a_trusted_proxy_each_client_has_its_own_lockout(
    start_test_api: StartApi, make_tenant: MakeTenant
) -> None:
    """The API listens on loopback behind the operator's proxy: every request comes from the
    proxy. Its X-Forwarded-For names the client, believed only from OPENSEND_TRUSTED_PROXIES."""
    api = await start_test_api(
        OPENSEND_AUTH_MAX_FAILURES="2",
        OPENSEND_AUTH_FAILURE_DELAY="0",
        OPENSEND_TRUSTED_PROXIES="127.0.0.1",
    )
    email = await make_user(await make_tenant())
    wrong = {"email": email, "password": "not the password"}
    right = {"email": email, "password": PASSWORD}
    async with session() as http:
        guesser = reader(api.url, http)
        # The guesser sends its own X-Forwarded-For first; the proxy appends the real address.
        guesser.forwarded_for = "198.51.100.7, 203.0.113.9"
        answers = [await guesser.post("/dashboard/login", wrong) for _ in range(3)]
    async with session() as http:
        colleague = reader(api.url, http)
        colleague.forwarded_for = "192.0.2.44"
        signed_in_page = await colleague.post("/dashboard/login", right)
    assert [a.status for a in answers] == [401, 429, 429]
    assert signed_in_page.status == 303


async def test_guesses_from_many_addresses_slow_the_account_down_without_locking_it_out(
    start_test_api: StartApi, make_tenant: MakeTenant
) -> None:
    """Each address stays under its own lockout; the account, guessed from all of them, is
    checked only once its wait has passed, except from a browser its user signed in from
    before (its device cookie)."""
    api = await start_test_api(
        OPENSEND_AUTH_FAILURE_DELAY="0", OPENSEND_TRUSTED_PROXIES="127.0.0.1"
    )
    email = await make_user(await make_tenant())
    other = await make_user(await make_tenant())
    wrong = {"email": email.upper(), "password": "not the password"}
    async with session() as http:
        laptop = reader(api.url, http)  # where the owner signed in before the guessing
        laptop.forwarded_for = "192.0.2.46"
        await laptop.sign_in(email)
    async with session() as http:
        guesser = reader(api.url, http)
        answers = []
        for n in range(FREE_FAILURES + 1):
            guesser.forwarded_for = f"198.51.100.{n + 1}"
            answers.append(await guesser.post("/dashboard/login", wrong))
        guesser.forwarded_for = "198.51.100.200"
        right_too_soon = await guesser.post(
            "/dashboard/login", {"email": email, "password": PASSWORD}
        )
    async with session() as http:
        colleague = reader(api.url, http)
        colleague.forwarded_for = "192.0.2.44"
        other_account = await colleague.post(
            "/dashboard/login", {"email": other, "password": PASSWORD}
        )
    async with session() as http:
        laptop.http = http
        from_the_laptop = await laptop.post(
            "/dashboard/login", {"email": email, "password": PASSWORD}
        )
    assert [a.status for a in answers] == [401] * FREE_FAILURES + [429]
    assert "for this account" in answers[-1].text
    assert right_too_soon.status == 429 and "for this account" in right_too_soon.text
    assert other_account.status == 303
    # Its device token spares the owner's own browser: guessing cannot keep them out.
    assert from_the_laptop.status == 303
    await asyncio.sleep(FIRST_WAIT_SECONDS + 0.5)  # the account's wait, and no more
    async with session() as http:
        # Guesses sent together once the wait is over: one is checked, the others refused.
        together = []
        for n in range(3):
            guess = reader(api.url, http)
            guess.forwarded_for = f"203.0.113.{n + 1}"
            together.append(guess.post("/dashboard/login", wrong))
        pages = await asyncio.gather(*together)
    assert sorted(page.status for page in pages) == [401, 429, 429]
    await asyncio.sleep(2 * FIRST_WAIT_SECONDS + 0.5)  # the doubled wait after that failure
    async with session() as http:
        owner = reader(api.url, http)
        owner.forwarded_for = "192.0.2.45"
        signed_in = await owner.post("/dashboard/login", {"email": email, "password": PASSWORD})
    assert signed_in.status == 303
