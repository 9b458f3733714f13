"""The msgpack subprotocol: same messages in binary frames; values JSON cannot hold reach
JSON subscribers in the documented form."""
import asyncio
import base64
import json

import msgpack

from conftest import run, Client


def test_msgpack_round_trip_with_binary_data(node):
    async def go():
        sub = await Client.connect(node.url, codec="msgpack")
        assert sub.ws.subprotocol == "tidewire.v1.msgpack"
        jsub = await Client.connect(node.url)
        r = await sub.request("subscribe", channel="bin")
        assert r["op"] == "subscribed"
        await jsub.request("subscribe", channel="bin")
        blob = bytes(range(256)) * 3
        pub = await Client.connect(node.url, codec="msgpack")
        value = {"blob": blob, "n": -5, "big": 2**63 + 5, "f": 1.5, "list": [None, True, "ü"], 7: "int key"}
        ack = await pub.request("publish", channel="bin", data=value)
        assert ack["op"] == "ack"
        ev = (await sub.events(1))[0]
        assert ev["pos"] == ack["pos"]
        assert ev["data"] == value  # byte-exact for msgpack subscribers
        jev = (await jsub.events(1))[0]
        assert jev["pos"] == ack["pos"]
        assert jev["data"]["blob"] == {"$base64": base64.b64encode(blob).decode()}
        assert jev["data"]["n"] == -5 and jev["data"]["big"] == 2**63 + 5 and jev["data"]["f"] == 1.5
        assert jev["data"]["list"] == [None, True, "ü"]
        assert jev["data"]["7"] == "int key"
    run(go())


def test_json_published_reaches_msgpack_subscribers(node):
    async def go():
        sub = await Client.connect(node.url, codec="msgpack")
        await sub.request("subscribe", channel="j")
        status, body = node.post("/api/publish", {"channel": "j", "data": {"a": [1, 2.5, "x"], "b": None}})
        assert status == 200
        ev = (await sub.events(1))[0]
        assert ev["data"] == {"a": [1, 2.5, "x"], "b": None}
        assert ev["pos"] == json.loads(body)["pos"]
    run(go())


def test_msgpack_errors_keep_the_connection(node):
    async def go():
        c = await Client.connect(node.url, codec="msgpack")
        await c.ws.send(b"\xc1")  # never-used byte: not msgpack
        m = await c.recv()
        assert m["op"] == "error" and m["code"] == 400
        await c.ws.send(msgpack.packb([1, 2, 3]))  # not a map
        m = await c.recv()
        assert m["op"] == "error" and m["code"] == 400
        await c.ws.send(msgpack.packb({"op": "subscribe", "id": 9, "channel": 5}))
        m = await c.recv()
        assert m == {"op": "error", "id": 9, "code": 400, "message": m["message"]}
        assert (await c.request("ping"))["op"] == "pong"
    run(go())
