/*
 * The front end of the example: an operations page for one vessel. It shows the crew's
 * movements as a live list, the forms waiting for an approver as a badge, and the
 * connection as an indicator. One socket for the whole page (TidewireProvider); every
 * event once and in order, across network losses and node restarts.
 */
import { useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { TidewireProvider, useChannel, useChannelEvents, useConnectionState } from 'tidewire/react';

const FORMS = 'role:approver';
const VESSEL = 'vessel:42';

function ConnectionIndicator() {
  const state = useConnectionState();
  return (
    <span className={`conn conn-${state}`} data-testid="conn" data-state={state}>
      <i /> {state}
    </span>
  );
}

/* The forms waiting for approval: submitted and not yet approved. The channel's newest 500
 * events fill the state at start; each later event updates it. */
function usePendingForms() {
  const [forms, setForms] = useState(() => new Map());
  useChannel(
    FORMS,
    (ev) =>
      setForms((prev) => {
        const next = new Map(prev);
        if (ev.data.type === 'form.submitted') next.set(ev.data.id, ev.data);
        else if (ev.data.type === 'form.approved') next.delete(ev.data.id);
        return next;
      }),
    { last: 500 }
  );
  return forms;
}

function PendingBadge({ forms }) {
  return (
    <span className="badge" data-testid="pending" data-count={forms.size} title="forms waiting for approval">
      {forms.size}
    </span>
  );
}

function CrewList() {
  const events = useChannelEvents(VESSEL, { limit: 1000, last: 50 });
  return (
    <ol className="crew" data-testid="crew">
      {events.map((ev) => (
        <li key={ev.pos} data-pos={ev.pos} data-n={ev.data.n}>
          <span className="n">#{ev.data.n}</span>
          <span className={`what ${ev.data.type.replace('.', '-')}`}>
            {ev.data.crew} {ev.data.type === 'crew.signed_off' ? 'signed off' : 'signed on'}
          </span>
          <time>{new Date(ev.ts).toLocaleTimeString()}</time>
        </li>
      ))}
    </ol>
  );
}

function Page() {
  const forms = usePendingForms();
  return (
    <>
      <header>
        <h1>MV Tern · crew</h1>
        <span className="approvals">
          approvals <PendingBadge forms={forms} />
        </span>
        <ConnectionIndicator />
      </header>
      <main>
        <section>
          <h2>Crew movements</h2>
          <CrewList />
        </section>
        <section>
          <h2>Waiting for approval</h2>
          <ul className="forms" data-testid="forms">
            {[...forms.values()].map((f) => (
              <li key={f.id}>
                <b>{f.id}</b> {f.title} · {f.crew}
              </li>
            ))}
          </ul>
        </section>
      </main>
    </>
  );
}

function App() {
  /* ?node=ws://HOST:PORT/ws, else the node beside the page on port 8080. */
  const url = useMemo(
    () => new URLSearchParams(location.search).get('node') || `ws://${location.hostname || '127.0.0.1'}:8080/ws`,
    []
  );
  return (
    <TidewireProvider url={url}>
      <Page />
    </TidewireProvider>
  );
}

createRoot(document.getElementById('root')).render(<App />);
