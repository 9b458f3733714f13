/*
 * Bundles the example page (App.jsx + React + tidewire) with esbuild into OUTDIR (default
 * ./dist) beside a copy of index.html and style.css. `npm run example` builds and serves it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));

export async function buildExample(outdir = path.join(here, 'dist')) {
  fs.mkdirSync(outdir, { recursive: true });
  await esbuild.build({
    entryPoints: [path.join(here, 'App.jsx')],
    bundle: true,
    format: 'esm',
    jsx: 'automatic',
    minify: true,
    sourcemap: true,
    target: 'es2020',
    define: { 'process.env.NODE_ENV': '"production"' },
    outfile: path.join(outdir, 'app.js'),
    logLevel: 'warning',
  });
  for (const f of ['index.html', 'style.css']) fs.copyFileSync(path.join(here, f), path.join(outdir, f));
  return outdir;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = await buildExample(process.argv[2]);
  console.log(`built ${out}`);
}
