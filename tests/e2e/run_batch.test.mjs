// `deltaserve run-batch` (vLLM's run-batch: an OpenAI batch file through the model, no HTTP server) on the tiny
// model: greedy answers equal to what the main server gives for the same requests, the lines in order, a bad line
// reported with its line number while the rest run, the file through standard input and output too, and a
// missing input file refused before the model loads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MODEL, call } from './helpers.mjs';

const dir = mkdtempSync(join(tmpdir(), 'ds-run-batch-'));

function runBatch(args, input) {
  return spawnSync(process.env.DS_E2E_BIN, ['run-batch', '--model', process.env.DS_E2E_MODEL_DIR,
    '--tokenizer', process.env.DS_E2E_TOKENIZER_DIR, '--served-model-name', MODEL, '--max-model-len', '512', '--max-num-batched-tokens', '1024',
    '--threads', '1', ...args], { encoding: 'utf8', input, timeout: 240000 });
}

const chat = { model: MODEL, messages: [{ role: 'user', content: 'Say something.' }], max_tokens: 8, temperature: 0 };
const comp = { model: MODEL, prompt: 'The tiny model', max_tokens: 6, temperature: 0 };
const lines = [
  { custom_id: 'chat-1', method: 'POST', url: '/v1/chat/completions', body: chat },
  { custom_id: 'comp-1', method: 'POST', url: '/v1/completions', body: comp },
  { custom_id: 'bad-url', method: 'POST', url: '/v1/embeddings', body: { input: 'x' } },
  { custom_id: 'chat-2', method: 'POST', url: '/v1/chat/completions', body: { ...chat, max_tokens: 4 } },
].map((l) => JSON.stringify(l));

test('run-batch answers each line as the server does, in order, a bad line reported by number', async () => {
  const input = join(dir, 'batch.jsonl');
  const output = join(dir, 'results.jsonl');
  writeFileSync(input, lines.join('\n') + '\n\n');
  const r = runBatch(['-i', input, '-o', output]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /run-batch: 4 results written/);
  const out = readFileSync(output, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(out.map((o) => o.custom_id), ['chat-1', 'comp-1', 'bad-url', 'chat-2']);
  assert.equal(out[2].response, null);
  assert.equal(out[2].error.code, 'invalid_url');
  assert.equal(out[2].error.line, 3);
  const served = [
    await call('/v1/chat/completions', { body: chat }),
    await call('/v1/completions', { body: comp }),
    null,
    await call('/v1/chat/completions', { body: { ...chat, max_tokens: 4 } }),
  ];
  for (const i of [0, 1, 3]) {
    assert.equal(served[i].status, 200, served[i].text);
    assert.equal(out[i].response.status_code, 200, JSON.stringify(out[i]));
    assert.equal(out[i].error, null);
    assert.deepEqual(out[i].response.body.choices, served[i].json.choices, `line ${i + 1}`);
    // (usage without prompt_tokens_details: chat-2 repeats chat-1's prompt, a prefix-cache hit in one run or the other)
    const counts = ({ prompt_tokens, completion_tokens, total_tokens }) => ({ prompt_tokens, completion_tokens, total_tokens });
    assert.deepEqual(counts(out[i].response.body.usage), counts(served[i].json.usage), `line ${i + 1}`);
  }
});

test('run-batch reads standard input and writes standard output', () => {
  const r = runBatch(['-i', '-', '-o', '-'], lines[1] + '\n');
  assert.equal(r.status, 0, r.stderr);
  const out = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(out.length, 1);
  assert.equal(out[0].custom_id, 'comp-1');
  assert.equal(out[0].response.status_code, 200);
});

test('run-batch refuses a missing input file by name before loading the model', () => {
  const output = join(dir, 'never.jsonl');
  const r = runBatch(['-i', join(dir, 'missing.jsonl'), '-o', output]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /cannot read the batch file .*missing\.jsonl/);
  assert.doesNotMatch(r.stderr, /loading weights/);
  assert.equal(existsSync(output), false);
});
