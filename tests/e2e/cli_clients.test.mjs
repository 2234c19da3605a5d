// `deltaserve chat` and `deltaserve complete` (vLLM's terminal clients) against the main server: --quick prints
// the same greedy reply the API gives, the interactive chat keeps the conversation across lines (the second
// reply is the API's answer to the whole history), and a wrong API key ends the command with the server's 401.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { URL, KEY, MODEL, call } from './helpers.mjs';

function cli(cmd, args, input = '', key = KEY) {
  return spawnSync(process.env.DS_E2E_BIN, [cmd, '--url', `${URL}/v1`, '--api-key', key, ...args],
    { encoding: 'utf8', input, timeout: 120000 });
}

async function chatReply(messages, maxTokens) {
  const r = await call('/v1/chat/completions', { body: { model: MODEL, messages, max_tokens: maxTokens, temperature: 0 } });
  assert.equal(r.status, 200, r.text);
  return r.json.choices[0].message.content;
}

test('chat --quick and complete --quick print the greedy reply the API gives', async () => {
  const c = cli('chat', ['--quick', 'Say something.', '--temperature', '0', '--max-tokens', '8']);
  assert.equal(c.status, 0, c.stderr);
  assert.equal(c.stdout, (await chatReply([{ role: 'user', content: 'Say something.' }], 8)) + '\n');
  const p = cli('complete', ['--quick', 'The tiny model', '--temperature', '0', '--max-tokens', '6', '--model-name', MODEL]);
  assert.equal(p.status, 0, p.stderr);
  const r = await call('/v1/completions', { body: { model: MODEL, prompt: 'The tiny model', max_tokens: 6, temperature: 0 } });
  assert.equal(p.stdout, r.json.choices[0].text + '\n');
});

test('the interactive chat keeps the conversation, with the system prompt', async () => {
  const sys = { role: 'system', content: 'Be brief.' };
  const c = cli('chat', ['--system-prompt', 'Be brief.', '--temperature', '0', '--max-tokens', '5'], 'Hello.\nAnd then?\n');
  assert.equal(c.status, 0, c.stderr);
  const r1 = await chatReply([sys, { role: 'user', content: 'Hello.' }], 5);
  const r2 = await chatReply([sys, { role: 'user', content: 'Hello.' }, { role: 'assistant', content: r1 },
    { role: 'user', content: 'And then?' }], 5);
  assert.equal(c.stdout,
    `Please enter a message for the chat model (${MODEL}; end of input quits):\n> ${r1}\n> ${r2}\n> \n`);
});

test('a wrong API key ends chat --quick with the 401', () => {
  const c = cli('chat', ['--quick', 'hi', '--model-name', MODEL], '', 'wrong-key');
  assert.equal(c.status, 1);
  assert.match(c.stderr, /HTTP 401/);
});
