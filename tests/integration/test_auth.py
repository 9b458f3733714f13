"""Who may connect, subscribe and publish (issue 5), with python3-websockets as the client:
JWT at connect and in ?token=, refusals as error 401/403 on an open connection, 4001 for a
bad, missing or expired token, refresh, key rotation on SIGHUP, and the open node's warning.
Every node here is checked for leaked tokens and keys when it stops (secure_node_factory)."""
import asyncio
import os
import signal
import time

import pytest
import websockets

from conftest import Client, expect_close, run

NAMESPACES = ["--namespace", "vessel: subscribe=users presence=on join-leave=on",
              "--namespace", "chat: subscribe=users publish=users",
              "--namespace", "ops: subscribe=role:ops publish=role:ops"]


def secured(secure_node_factory, keys, *more, rsa=False):
    return secure_node_factory(*keys.args(rsa), *NAMESPACES, *more).start()


def test_open_node_says_so_and_keeps_todays_behaviour(secure_node_factory):
    node = secure_node_factory().start()
    assert "auth-open" in node.read_log()

    async def go():
        c = await Client.connect(node.url)
        assert (await c.request("subscribe", channel="user:someone"))["op"] == "subscribed"
        assert (await c.request("publish", channel="role:admin", data=1))["op"] == "ack"
        assert (await c.request("refresh", token="x"))["code"] == 400
    run(go())


def test_must_authenticate_first(secure_node_factory, keys):
    node = secured(secure_node_factory, keys)
    log = node.read_log()
    assert "auth-open" not in log and "1 JWT keys" in log

    async def go():
        c = await Client.connect(node.url)
        r = await c.request("subscribe", channel="vessel:1")
        assert r["op"] == "error" and r["code"] == 401, r
        r = await c.request("publish", channel="chat:1", data=1)
        assert r["code"] == 401, r
        assert (await c.request("ping"))["op"] == "pong"  # the connection stays
        r = await c.request("connect", token=keys.token("u1"))
        assert r["op"] == "connected", r
        assert (await c.request("subscribe", channel="vessel:1"))["op"] == "subscribed"
    run(go())


@pytest.mark.parametrize("case", ["missing", "garbage", "bad-signature", "expired", "alg-none",
                                  "unknown-kid", "no-sub"])
def test_bad_tokens_close_4001(secure_node_factory, keys, case):
    node = secured(secure_node_factory, keys)
    tokens = {
        "missing": None,
        "garbage": keys.secrets.add("not-a-token-at-all-xxxx"),
        "bad-signature": keys.token("u1", key="another-secret-of-enough-length-0000"),
        "expired": keys.token("u1", ttl=-120),
        "alg-none": keys.token("u1", alg="none"),
        "unknown-kid": keys.token("u1", kid="nope"),
        "no-sub": keys.token(None),
    }

    async def go():
        c = await Client.connect(node.url)
        msg = {"op": "connect", "id": 1}
        if tokens[case] is not None:
            msg["token"] = tokens[case]
        await c.send(msg)
        await expect_close(c, 4001)
    run(go())
    assert node.stats()["security"]["auth_failures"] >= 1


def test_auth_timeout_closes_4001(secure_node_factory, keys):
    node = secured(secure_node_factory, keys, "--auth-timeout", "500ms")

    async def go():
        c = await Client.connect(node.url)
        t0 = time.monotonic()
        await expect_close(c, 4001, timeout=5)
        assert time.monotonic() - t0 < 3
    run(go())


def test_token_in_url(secure_node_factory, keys):
    node = secured(secure_node_factory, keys)

    async def go():
        c = await Client.connect(node.url + "?token=" + keys.token("u9"))
        assert (await c.request("subscribe", channel="user:u9"))["op"] == "subscribed"
        assert (await c.request("connect"))["op"] == "connected"  # connect without token is fine now
        bad = await Client.connect(node.url + "?token=" + keys.token("u9", ttl=-100))
        await expect_close(bad, 4001)
    run(go())


def test_personal_channels_roles_and_grants(secure_node_factory, keys):
    node = secured(secure_node_factory, keys)

    async def go():
        c = await Client.connect(node.url)
        tok = keys.token("alice", roles=["crew"], channels=["form:12", "fleet:*"])
        assert (await c.request("connect", token=tok))["op"] == "connected"

        async def sub(ch):
            return await c.request("subscribe", channel=ch)
        assert (await sub("user:alice"))["op"] == "subscribed"
        r = await sub("user:bob")
        assert r["op"] == "error" and r["code"] == 403, r
        assert (await sub("role:crew"))["op"] == "subscribed"
        assert (await sub("role:admin"))["code"] == 403
        assert (await sub("form:12"))["op"] == "subscribed"
        assert (await sub("form:13"))["code"] == 403
        assert (await sub("fleet:north"))["op"] == "subscribed"
        assert (await sub("misc"))["code"] == 403          # the default namespace: grants only
        assert (await sub("ops:1"))["code"] == 403          # a role alice lacks
        assert (await sub("vessel:7"))["op"] == "subscribed"  # users
        # publishing from a client: nobody by default, the namespace's rule otherwise
        assert (await c.request("publish", channel="vessel:7", data=1))["code"] == 403
        assert (await c.request("publish", channel="user:alice", data=1))["code"] == 403
        assert (await c.request("publish", channel="chat:1", data=1))["op"] == "ack"
        assert (await c.request("ping"))["op"] == "pong"
        # the back end publishes anywhere through the API
        status, _ = node.post("/api/publish", {"channel": "user:alice", "data": {"n": 1}})
        assert status == 200
        ev = (await c.events(1, "user:alice"))[0]
        assert ev["data"] == {"n": 1}
    run(go())
    st = node.stats()["security"]
    assert st["forbidden"] >= 7 and st["tokens_accepted"] >= 1


def test_role_holder_may_publish(secure_node_factory, keys):
    node = secured(secure_node_factory, keys)

    async def go():
        c = await Client.connect(node.url)
        await c.request("connect", token=keys.token("op1", roles=["ops"]))
        assert (await c.request("subscribe", channel="ops:1"))["op"] == "subscribed"
        assert (await c.request("publish", channel="ops:1", data="x"))["op"] == "ack"
    run(go())


def test_rs256(secure_node_factory, keys):
    node = secured(secure_node_factory, keys, rsa=True)

    async def go():
        c = await Client.connect(node.url)
        r = await c.request("connect", token=keys.token("r1", alg="RS256", kid="rs"))
        assert r["op"] == "connected", r
        assert (await c.request("subscribe", channel="user:r1"))["op"] == "subscribed"
        # HS256 made with the RSA public key as the secret, naming the RSA key: refused
        with open(keys.rsa()[1]) as f:
            pem = f.read()
        d = await Client.connect(node.url)
        await d.send({"op": "connect", "token": keys.token("r1", alg="HS256", kid="rs", key=pem)})
        await expect_close(d, 4001)
    run(go())


def test_refresh_and_expiry(secure_node_factory, keys):
    node = secured(secure_node_factory, keys, "--jwt-leeway", "0s")

    async def go():
        c = await Client.connect(node.url)
        await c.request("connect", token=keys.token("u1", ttl=2))
        # another user's token cannot take over the connection
        r = await c.request("refresh", token=keys.token("u2", ttl=60))
        assert r["op"] == "error" and r["code"] == 401, r
        r = await c.request("refresh", token=keys.token("u1", ttl=60))
        assert r["op"] == "refreshed" and r["exp"] > time.time() + 30, r
        await asyncio.sleep(3)  # past the first token's expiry
        assert (await c.request("ping"))["op"] == "pong"

        d = await Client.connect(node.url)
        await d.request("connect", token=keys.token("u3", ttl=2))
        reason = await expect_close(d, 4001, timeout=6)
        assert "expired" in reason
    run(go())


def test_refresh_drops_what_the_new_token_no_longer_allows(secure_node_factory, keys):
    node = secured(secure_node_factory, keys)

    async def go():
        c = await Client.connect(node.url)
        await c.request("connect", token=keys.token("u1", roles=["ops"]))
        assert (await c.request("subscribe", channel="ops:1"))["op"] == "subscribed"
        assert (await c.request("subscribe", channel="role:ops"))["op"] == "subscribed"
        r = await c.request("refresh", token=keys.token("u1", roles=[]))
        assert r["op"] == "refreshed"
        ended = [m for m in c.pending if m.get("op") == "error" and m.get("code") == 403]
        assert len(ended) == 2, c.pending
        status, _ = node.post("/api/publish", {"channel": "ops:1", "data": 1})
        assert status == 200
        with pytest.raises(asyncio.TimeoutError):
            await c.events(1, "ops:1", timeout=0.5)
    run(go())


def test_sighup_rotates_keys_and_keeps_connections(secure_node_factory, keys):
    node = secured(secure_node_factory, keys)

    async def go():
        c = await Client.connect(node.url)
        await c.request("connect", token=keys.token("u1"))
        await c.request("subscribe", channel="user:u1")
        old = keys.token("u1")
        new_secret = keys.secrets.add("rotated-" + os.urandom(16).hex())
        with open(keys.hs_file, "w") as f:
            f.write(new_secret)
        node.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if node.read_log().count("SIGHUP: 1 JWT keys loaded"):
                break
            await asyncio.sleep(0.05)
        d = await Client.connect(node.url)
        await d.send({"op": "connect", "token": old})
        await expect_close(d, 4001)
        e = await Client.connect(node.url)
        r = await e.request("connect", token=keys.token("u1", key=new_secret))
        assert r["op"] == "connected"
        # the first connection is still here and still receives
        assert node.post("/api/publish", {"channel": "user:u1", "data": 2})[0] == 200
        assert (await c.events(1, "user:u1"))[0]["data"] == 2
    run(go())


def test_bad_key_config_stops_the_node(secure_node_factory, keys, tmp_path):
    short = tmp_path / "short"
    short.write_text("tooshort")
    node = secure_node_factory("--jwt-key", f"kid=a alg=HS256 secret-file={short}")
    with pytest.raises(RuntimeError) as e:
        node.start()
    assert "at least 32 bytes" in str(e.value)
    node.proc = None  # it exited by itself: nothing to stop
