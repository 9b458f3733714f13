"""No token, key or payload in any log line (issue 5).

Two layers, so the check is reliable whatever order ctest runs the suites in:
- every node a security test starts (secure_node_factory) runs with --log-level debug and
  has its whole log checked, after it stopped, for every secret that test used;
- this file drives every path that handles a secret (good and bad tokens of each kind, in
  connect, refresh and the URL; API and admin keys, right and wrong; payloads; config
  errors) and then sweeps every node log in TW_TEST_TMP for every secret any security test
  of the suite registered so far (tw-secrets/*.txt).
"""
import glob
import json
import os
import subprocess
import time

from conftest import BIN, TMP, Client, Secrets, expect_close, run


def test_every_path_that_handles_a_secret(secure_node_factory, keys, secrets):
    api = secrets.add("api-" + os.urandom(12).hex())
    admin = secrets.add("admin-" + os.urandom(12).hex())
    marker = secrets.add("payload-" + os.urandom(12).hex())
    node = secure_node_factory(*keys.args(rsa=True), "--api-key", api, "--admin-key", admin,
                               "--namespace", "room: subscribe=users publish=users presence=on "
                               "join-leave=on").start()

    async def go():
        for tok in (keys.token("u1", ttl=-100), keys.token("u1", key="x" * 40),
                    keys.token("u1", alg="none"), keys.token("u1", kid="zz"),
                    keys.token(None), secrets.add("garbage." + os.urandom(20).hex() + ".x")):
            c = await Client.connect(node.url)
            await c.send({"op": "connect", "token": tok})
            await expect_close(c, 4001)
            c = await Client.connect(node.url + "?token=" + tok)
            await expect_close(c, 4001)
        c = await Client.connect(node.url)
        await c.request("connect", token=keys.token("u1", alg="RS256", kid="rs"))
        await c.request("refresh", token=keys.token("u1", ttl=-100))
        await c.request("refresh", token=keys.token("u2"))
        await c.request("refresh", token=keys.token("u1"))
        await c.request("subscribe", channel="room:1")
        assert (await c.request("publish", channel="room:1", data={"m": marker}))["op"] == "ack"
        await c.request("publish", channel="user:u2", data={"m": marker})
        await c.events(1, "room:1")
        await c.request("presence", channel="room:1")
        for key in (api, "wrong-" + api):
            auth = {"Authorization": "Bearer " + key}
            node.post("/api/publish", {"channel": "room:1", "data": marker}, auth)
            node.post("/api/broadcast", {"channels": ["room:1"], "data": marker}, auth)
            node.get("/api/presence?channel=room:1", auth)
            node.post("/api/publish", b'{"channel":"room:1","data":"' + marker.encode() + b'"', auth)
        for key in (admin, "wrong-" + admin):
            node.get("/stats", {"Authorization": "Bearer " + key})
        node.post("/api/disconnect", {"user": "u1", "reason": "bye"},
                  {"Authorization": "Bearer " + api})
        await expect_close(c, 4003)
    run(go())
    # the teardown of secure_node_factory checks this node's log


def test_config_errors_never_echo_secrets(tmp_path, secrets):
    inline = secrets.add("inline-" + os.urandom(12).hex())
    p = subprocess.run([BIN, "--jwt-key", f"kid=a alg=HS256 secret={inline}", "--data",
                        str(tmp_path / "d")], capture_output=True, timeout=20)
    assert p.returncode != 0
    out = (p.stdout + p.stderr).decode()
    assert "unknown field 'secret'" in out, out
    assert not secrets.leaks(out), out


def recent(paths, hours=3):
    """Files of this run of the suite (and the last few): the scratch directory keeps
    every run's files, and sweeping all of them would grow without bound."""
    cutoff = time.time() - hours * 3600
    return [p for p in paths if os.path.getmtime(p) >= cutoff]


def test_sweep_every_log_of_the_suite():
    base = TMP if os.path.isdir(TMP) else None
    if base is None:
        return
    values = Secrets.__new__(Secrets)
    values.values = set()
    for f in recent(glob.glob(os.path.join(base, "tw-secrets", "*.txt"))):
        with open(f) as fh:
            values.values.update(line.rstrip("\n").replace("\\n", "\n") for line in fh if line.strip())
    leaked = {}
    for log in recent(glob.glob(os.path.join(base, "*.log"))):
        with open(log, "rb") as fh:
            found = values.leaks(fh.read().decode(errors="replace"))
        if found:
            leaked[log] = found
    assert not leaked, json.dumps(leaked, indent=1)
