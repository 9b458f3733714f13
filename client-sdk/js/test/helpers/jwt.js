/*
 * HS256 tokens for nodes started with --jwt-key (see secureNodeArgs), made with Node's crypto.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BIN } from './node.js';

export const SECRET = 'a-test-secret-of-at-least-32-bytes!';

/** True when the tidewire under test checks tokens (--jwt-key exists). */
export const nodeHasJwt = (() => {
  try {
    return /--jwt-key/.test(execFileSync(BIN, ['--help'], { encoding: 'utf8' }));
  } catch {
    return false;
  }
})();

/** A token for user sub, expiring in expInSeconds, with extra claims. */
export function jwt(sub, expInSeconds, claims = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT', kid: 'k1' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + expInSeconds, ...claims });
  const sig = crypto.createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Writes the key file into dir; returns the flags that make a node check tokens with it. */
export function secureNodeArgs(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const keyFile = path.join(dir, 'jwt.key');
  fs.writeFileSync(keyFile, SECRET);
  return ['--jwt-key', `kid=k1 alg=HS256 secret-file=${keyFile}`];
}
