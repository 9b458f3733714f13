/*
 * Headless Debian Chromium driven by playwright-core (never a downloaded browser), with the
 * flags this machine needs, and a place for screenshots (TW_ARTIFACTS, which ctest sets to
 * BUILD/artifacts/browser).
 */
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { TMP } from './node.js';

export const CHROMIUM = process.env.TW_CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = process.env.TW_ARTIFACTS || path.join(TMP, 'artifacts', 'browser');

/** Launches Chromium (playwright gives each launch a fresh, empty user-data-dir). */
export async function launch() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Saves a full-page screenshot as ARTIFACTS/name.png; returns its path. */
export async function screenshot(page, name) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Collects the page's console errors and uncaught exceptions (a test asserts none). */
export function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  return errors;
}
