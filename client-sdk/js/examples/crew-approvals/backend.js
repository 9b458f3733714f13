/*
 * The back end of the example: it approves forms and moves crew, and tells the front ends
 * through tidewire's HTTP API (POST /api/publish), as a Node, Python or Go service would.
 *
 *   node backend.js [--http http://127.0.0.1:8080] [--api-key KEY] [--count 50] [--every 500]
 *
 * Channels: `role:approver` (forms waiting for an approver: form.submitted, form.approved)
 * and `vessel:42` (crew.signed_on, crew.signed_off, crew.moved).
 */
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

export const FORMS = 'role:approver';
export const VESSEL = 'vessel:42';

export class Backend {
  constructor(http = 'http://127.0.0.1:8080', apiKey = '') {
    this.http = http.replace(/\/$/, '');
    this.apiKey = apiKey;
  }

  /** Publishes one event; resolves with its position once it is durable. */
  async publish(channel, data) {
    const headers = { 'content-type': 'application/json' };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    const res = await fetch(`${this.http}/api/publish`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ channel, data }),
    });
    const body = await res.json().catch(() => ({}));
    if (res.status !== 200) throw new Error(`publish ${channel}: ${res.status} ${body.error || ''}`);
    return body.pos;
  }

  /** Like publish, but retries while the node is away (a restart): what a back end with a
   * queue of its own does. */
  async publishSurely(channel, data, timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await this.publish(channel, data);
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  submitForm(id, crew, title) {
    return this.publishSurely(FORMS, { type: 'form.submitted', id, crew, title });
  }
  approveForm(id, by = 'captain') {
    return this.publishSurely(FORMS, { type: 'form.approved', id, by });
  }
  moveCrew(n, crew, action = 'crew.signed_on') {
    return this.publishSurely(VESSEL, { type: action, n, crew, vessel: 'MV Tern' });
  }
}

const NAMES = ['Ada', 'Bram', 'Chen', 'Dita', 'Emil', 'Fenna', 'Goran', 'Hild', 'Ines', 'Jonas'];

async function main() {
  const { values } = parseArgs({
    options: {
      http: { type: 'string', default: 'http://127.0.0.1:8080' },
      'api-key': { type: 'string', default: '' },
      count: { type: 'string', default: '50' },
      every: { type: 'string', default: '500' },
    },
  });
  const b = new Backend(values.http, values['api-key']);
  const count = Number(values.count);
  const every = Number(values.every);
  let forms = 0;
  for (let n = 1; n <= count; n++) {
    const crew = NAMES[n % NAMES.length];
    const action = n % 3 === 0 ? 'crew.signed_off' : 'crew.signed_on';
    console.log(`${await b.moveCrew(n, crew, action)}  ${action} ${crew}`);
    if (n % 2 === 0) {
      forms++;
      console.log(`${await b.submitForm(`F-${forms}`, crew, 'Sign-on papers')}  form F-${forms} submitted`);
    }
    if (n % 5 === 0) console.log(`${await b.approveForm(`F-${forms - 1}`)}  form F-${forms - 1} approved`);
    await new Promise((r) => setTimeout(r, every));
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e.message);
    process.exit(1);
  });
}
