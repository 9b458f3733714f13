/*
 * A real tidewire node for the tests: started on a free port in 23000-23999 with a scratch
 * data directory, restartable on the same port and data, stopped by pid whatever happens.
 *
 * TIDEWIRE_BIN names the binary (ctest sets it); else ../../../../build/bin/tidewire.
 * TW_TEST_TMP is where data directories and logs go (else the OS temp dir).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '../../../..');
export const BIN = process.env.TIDEWIRE_BIN || path.join(ROOT, 'build/bin/tidewire');
export const TMP = process.env.TW_TEST_TMP || os.tmpdir();

const running = new Set();
function killAll() {
  for (const p of running) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAll();
    process.exit(1);
  });
}

function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A free port in 23000-23999 (random start, so parallel test files rarely collide). */
export async function freePort() {
  const start = 23000 + Math.floor(Math.random() * 1000);
  for (let i = 0; i < 1000; i++) {
    const port = 23000 + ((start - 23000 + i) % 1000);
    if (await portFree(port)) return port;
  }
  throw new Error('no free port in 23000-23999');
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until fn() returns a truthy value (polling), or throws after timeoutMs. */
export async function waitFor(fn, timeoutMs = 10000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export class TidewireNode {
  constructor(name, extraArgs = []) {
    fs.mkdirSync(TMP, { recursive: true });
    this.dir = fs.mkdtempSync(path.join(TMP, `js-${name}-`));
    this.data = path.join(this.dir, 'data');
    this.logPath = path.join(this.dir, 'node.log');
    this.extra = extraArgs;
    this.port = 0;
    this.proc = null;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }
  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(moreArgs = []) {
    if (!this.port) this.port = await freePort();
    const args = ['--listen', `127.0.0.1:${this.port}`, '--data', this.data, ...this.extra, ...moreArgs];
    const log = fs.openSync(this.logPath, 'a');
    const proc = spawn(BIN, args, { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    this.proc = proc;
    running.add(proc);
    proc.on('exit', () => running.delete(proc));
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`tidewire exited with ${proc.exitCode}:\n${this.log()}`);
      try {
        const r = await fetch(this.http + '/readyz');
        if (r.status === 200) return this;
      } catch {
        /* not listening yet */
      }
      await sleep(30);
    }
    throw new Error(`tidewire did not become ready:\n${this.log()}`);
  }

  log() {
    try {
      return fs.readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  /** SIGTERM (drain: clients get 1012) and wait for the exit, which must be clean (status
   * 0: under the sanitizers, also no leak and no error report). */
  async stop(signal = 'SIGTERM') {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', (code, sig) => r({ code, sig })));
    proc.kill(signal);
    const t = setTimeout(() => proc.kill('SIGKILL'), 15000);
    const { code, sig } = await exited;
    clearTimeout(t);
    this.proc = null;
    if (signal === 'SIGTERM' && code !== 0)
      throw new Error(`tidewire exited with ${code ?? sig} after SIGTERM:\n${this.log().slice(-4000)}`);
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  /** POST /api/publish; resolves with the position. */
  async publish(channel, data) {
    const r = await fetch(this.http + '/api/publish', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel, data }),
    });
    const body = await r.json();
    if (r.status !== 200) throw new Error(`publish: ${r.status} ${JSON.stringify(body)}`);
    return body.pos;
  }

  async stats() {
    const r = await fetch(this.http + '/stats');
    return r.json();
  }

  /** Stops the node (SIGTERM, checked as in stop()) and removes its directory. */
  async cleanup() {
    try {
      await this.stop();
    } finally {
      await this.stop('SIGKILL');
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
