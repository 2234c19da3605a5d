// SIGTERM drains: the request in progress completes, new work is refused, the process exits
// cleanly. Runs last: it stops the small server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { MODEL, SMALL_URL, sseEvents } from './helpers.mjs';

test('SIGTERM lets the stream in progress finish, refuses new work, and exits', async () => {
  const pid = Number(process.env.DS_E2E_SMALL_PID);
  const res = await fetch(`${SMALL_URL}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL, prompt: 'drain me', max_tokens: 80, ignore_eos: true, stream: true }),
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let text = dec.decode((await reader.read()).value, { stream: true });
  process.kill(pid, 'SIGTERM');
  await new Promise((r) => setTimeout(r, 200));
  // New work is refused while draining (503), or the listener is already closed (ECONNREFUSED), or, on a
  // loaded machine where the signal is handled later, the connection made just before the listener closed is
  // reset (it sat in the kernel's accept queue, or was accepted and closed as idle): UND_ERR_SOCKET.
  const refused = await fetch(`${SMALL_URL}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL, prompt: 'late', max_tokens: 2 }),
  }).then((r) => r.status, (e) => e.cause?.code ?? 'error');
  assert.ok([503, 'ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET'].includes(refused), `got ${refused}`);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += dec.decode(value, { stream: true });
  }
  const events = sseEvents(text);
  assert.equal(events.at(-1), '[DONE]');
  const last = events.at(-2);
  assert.equal(last.choices[0].finish_reason, 'length');
  let log = '';
  for (let i = 0; i < 100 && !log.includes('] stopped') && !/ stopped$/m.test(log); i++) {
    await new Promise((r) => setTimeout(r, 100));
    log = readFileSync(`${process.env.DS_E2E_LOG_DIR}/small.log`, 'utf8');
  }
  assert.match(log, /received SIGTERM: draining/);
  assert.match(log, /stopped$/m);
});
