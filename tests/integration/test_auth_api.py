"""The back-end API and operator endpoints of issue 5: /api/broadcast, /api/disconnect,
presence (op, join/leave, GET /api/presence), the API and admin keys, the Origin allow-list."""
import asyncio
import json

import pytest
import websockets

from conftest import Client, expect_close, run

API = "api-key-" + "0" * 8 + "f00d"
ADMIN = "admin-key-" + "1" * 8 + "beef"
BEARER = {"Authorization": "Bearer " + API}


def node_with(secure_node_factory, keys, secrets, *more):
    secrets.add(API)
    secrets.add(ADMIN)
    return secure_node_factory(*keys.args(), "--api-key", API, "--admin-key", ADMIN,
                               "--namespace", "room: subscribe=users presence=on join-leave=on",
                               "--namespace", "quiet: subscribe=users presence=on",
                               *more).start()


def test_api_and_admin_keys(secure_node_factory, keys, secrets):
    node = node_with(secure_node_factory, keys, secrets)
    for path, body in (("/api/publish", {"channel": "a", "data": 1}),
                       ("/api/broadcast", {"channels": ["a"], "data": 1}),
                       ("/api/disconnect", {"user": "x"})):
        assert node.post(path, body)[0] == 401
        assert node.post(path, body, {"Authorization": "Bearer wrong"})[0] == 401
    assert node.get("/api/presence?channel=room:1")[0] == 401
    # /stats and /metrics want the admin key, not the API key
    assert node.get("/stats")[0] == 401
    assert node.get("/metrics", BEARER)[0] == 401
    status, body = node.get("/stats", {"Authorization": "Bearer " + ADMIN})
    assert status == 200
    assert json.loads(body)["security"]["http_unauthorized"] >= 9
    status, text = node.get("/metrics", {"Authorization": "Bearer " + ADMIN})
    assert status == 200 and "tidewire_http_unauthorized_total" in text
    # health and readiness stay open for load balancers
    assert node.get("/healthz")[0] == 200 and node.get("/readyz")[0] == 200


def test_broadcast(secure_node_factory, keys, secrets):
    node = node_with(secure_node_factory, keys, secrets)

    async def go():
        a = await Client.connect(node.url)
        await a.request("connect", token=keys.token("alice"))
        b = await Client.connect(node.url)
        await b.request("connect", token=keys.token("bob"))
        await a.request("subscribe", channel="user:alice")
        await b.request("subscribe", channel="user:bob")
        body = b'{"channels":["user:alice","user:bob"],"data":{"big":9007199254740993,"s":"x"}}'
        status, resp = node.post("/api/broadcast", body, BEARER)
        assert status == 200, resp
        assert "pos" in json.loads(resp)
        for c, ch in ((a, "user:alice"), (b, "user:bob")):
            raw = await asyncio.wait_for(c.ws.recv(), 10)
            assert '"big":9007199254740993' in raw and json.loads(raw)["channel"] == ch
        for bad in ({"channels": [], "data": 1}, {"channels": "a", "data": 1},
                    {"channels": ["ok", ""], "data": 1}, {"channels": ["a"]},
                    {"channels": [1], "data": 1}, {"data": 1}):
            assert node.post("/api/broadcast", bad, BEARER)[0] == 400, bad
        bom = b'\xef\xbb\xbf{"channels":["a"],"data":1}'
        assert node.post("/api/broadcast", bom, BEARER)[0] == 400
        assert node.post("/api/broadcast", b'\x0c{"channels":["a"],"data":1}', BEARER)[0] == 400
    run(go())


def test_disconnect_a_user(secure_node_factory, keys, secrets):
    node = node_with(secure_node_factory, keys, secrets)

    async def go():
        m1 = await Client.connect(node.url)
        await m1.request("connect", token=keys.token("mallory"))
        m2 = await Client.connect(node.url + "?token=" + keys.token("mallory"))
        await m2.request("ping")
        other = await Client.connect(node.url)
        await other.request("connect", token=keys.token("trent"))
        status, body = node.post("/api/disconnect", {"user": "mallory"}, BEARER)
        assert status == 200 and json.loads(body) == {"disconnected": 2}
        await expect_close(m1, 4003)
        await expect_close(m2, 4003)
        assert (await other.request("ping"))["op"] == "pong"
        status, body = node.post("/api/disconnect", {"user": "trent", "code": 4208,
                                                     "reason": "move"}, BEARER)
        assert json.loads(body) == {"disconnected": 1}
        assert await expect_close(other, 4208) == "move"
        for bad in ({"user": ""}, {"user": "x", "code": 1006}, {"user": "x", "code": "4003"},
                    {"code": 4003}, {"user": "x", "code": 4003.5}, {"user": "x", "code": 1e300},
                    {"user": "x", "code": -1e300}):
            assert node.post("/api/disconnect", bad, BEARER)[0] == 400, bad
    run(go())


def test_presence_and_join_leave(secure_node_factory, keys, secrets):
    node = node_with(secure_node_factory, keys, secrets)

    async def go():
        a = await Client.connect(node.url)
        await a.request("connect", token=keys.token("alice"))
        b = await Client.connect(node.url, codec="msgpack")
        await b.request("connect", token=keys.token("bob"))
        await a.request("subscribe", channel="room:1")
        await b.request("subscribe", channel="room:1")
        j = await a.wait(lambda m: m.get("op") == "join")
        assert j["channel"] == "room:1" and j["user"] == "bob" and j["conn"] and j["node"]
        r = await b.request("presence", channel="room:1")
        assert r["op"] == "presence", r
        assert sorted(m["user"] for m in r["members"]) == ["alice", "bob"]
        status, body = node.get("/api/presence?channel=room:1", BEARER)
        assert status == 200 and len(json.loads(body)["members"]) == 2
        await b.request("unsubscribe", channel="room:1")
        lv = await a.wait(lambda m: m.get("op") == "leave")
        assert lv["user"] == "bob"
        # a namespace with presence but no join/leave; one without presence at all
        await b.request("subscribe", channel="quiet:1")
        await a.request("subscribe", channel="quiet:1")
        r = await a.request("presence", channel="quiet:1")
        assert len(r["members"]) == 2
        assert not [m for m in b.pending if m.get("op") == "join"]
        r = await a.request("presence", channel="user:alice")
        assert r["op"] == "error" and r["code"] == 403
        assert node.get("/api/presence?channel=user:alice", BEARER)[0] == 403
        # a member who goes away leaves
        await b.request("subscribe", channel="room:1")
        await a.wait(lambda m: m.get("op") == "join")
        b.ws.transport.abort()
        lv = await a.wait(lambda m: m.get("op") == "leave")
        assert lv["user"] == "bob"
        r = await a.request("presence", channel="room:1")
        assert [m["user"] for m in r["members"]] == ["alice"]
        # presence of a channel one may not subscribe to is refused
        c = await Client.connect(node.url)
        r = await c.request("presence", channel="room:1")
        assert r["code"] == 401
    run(go())


def test_origin_allow_list(secure_node_factory):
    node = secure_node_factory("--allowed-origins", "https://app.example.com, http://localhost:3000").start()

    async def go():
        c = await Client.connect(node.url, origin="https://app.example.com")
        assert (await c.request("ping"))["op"] == "pong"
        c = await Client.connect(node.url, origin="http://localhost:3000")
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await Client.connect(node.url, origin="https://evil.example.com")
        assert e.value.status_code == 403
        c = await Client.connect(node.url)  # no Origin: not a browser
        assert (await c.request("ping"))["op"] == "pong"
    run(go())
    assert node.stats()["security"]["origin_refused"] == 1
