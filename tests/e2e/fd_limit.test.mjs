// Descriptor exhaustion (issue 11, item 3): with `ulimit -n 256` and 400 idle connections the
// server must stay quiet (< 5% CPU, < 100 log lines) and serve a new request once connections
// free. Two servers: the default connection limit (derived from the fd limit: accepting pauses),
// and a limit above what the descriptors allow (accept fails with EMFILE: it must back off).
// Run by ctest as e2e_fd_limit (DS_E2E_BIN = the deltaserve binary); uses only Node built-ins.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';

const BIN = process.env.DS_E2E_BIN;
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Starts `deltaserve serve` under `ulimit -n 256`; resolves {proc, port, log} once /health answers.
async function startServer(extra) {
  const log = path.join(mkdtempSync(path.join(tmpdir(), 'ds-fd-')), 'server.log');
  const args = [`${BIN} serve --model tests/fixtures/tiny/model --tokenizer tests/fixtures/tiny/tokenizer`,
    `--served-model-name tiny --host 127.0.0.1 --port 0 --threads 1 ${extra} >${log} 2>&1`].join(' ');
  const proc = spawn('bash', ['-c', `ulimit -n 256 && exec ${args}`], { cwd: ROOT, stdio: 'ignore' });
  for (let i = 0; i < 600; i++) {
    await sleep(100);
    const m = /on http:\/\/127\.0\.0\.1:(\d+)/.exec(readFileSync(log, 'utf8'));
    if (m) {
      const port = Number(m[1]);
      const ok = await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false);
      if (ok) return { proc, port, log };
    }
    if (proc.exitCode !== null) break;
  }
  proc.kill('SIGKILL');
  throw new Error(`the server did not start:\n${readFileSync(log, 'utf8')}`);
}

function cpuTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);  // utime + stime
}

async function openIdle(port, n) {
  const socks = [];
  await Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve());
    s.on('error', reject);
    socks.push(s);
  })));
  return socks;
}

async function scenario(extra) {
  const { proc, port, log } = await startServer(extra);
  try {
    const socks = await openIdle(port, 400);
    await sleep(500);  // the server accepts what it can
    const t0 = cpuTicks(proc.pid);
    const seconds = 3;
    await sleep(seconds * 1000);
    const cpu = (cpuTicks(proc.pid) - t0) / CLK_TCK / seconds;
    const lines = readFileSync(log, 'utf8').split('\n').length;
    assert.ok(cpu < 0.05, `the server used ${(cpu * 100).toFixed(1)}% CPU with 400 idle connections`);
    assert.ok(lines < 100, `the server logged ${lines} lines`);

    for (const s of socks.splice(0, 300)) s.destroy();  // connections free
    const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', prompt: 'hello', max_tokens: 2 }),
      signal: AbortSignal.timeout(20000),
    });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).usage.completion_tokens, 2);
    for (const s of socks) s.destroy();
    return readFileSync(log, 'utf8');
  } finally {
    proc.kill('SIGKILL');
  }
}

test('at the default connection limit the server pauses accepting, quietly', async () => {
  const log = await scenario('');
  assert.match(log, /connections open, the limit/);
});

test('out of descriptors (EMFILE) the accept loop backs off with a rate-limited log', async () => {
  const log = await scenario('--max-connections 1000');
  assert.match(log, /accept failed: Too many open files/);
});
