'use strict';
// The Node.js SDK against a real agent it starts itself (container sandboxes of the test images;
// `make setup`, `make guest`; MSB_AGENT_BIN / MSB_GUEST_AGENT as the Makefile exports them).
// scripts/test.sh sets MSB_STATE_DIR to a fresh directory and stops the agent afterwards.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const m = require('..');

test('create, exec, stream, files, errors, stop and remove', async () => {
  const host = fs.mkdtempSync(path.join(os.tmpdir(), 'msb-node-'));
  fs.writeFileSync(path.join(host, 'in.txt'), 'from the host\n');
  const sb = await m.Sandbox.create('node-sdk', {
    image: 'busybox', memory: 128, isolation: 'container', env: { GREETING: 'hello' }, workdir: '/tmp',
    volumes: [{ path: '/host', kind: 'bind', source: host, readonly: true }, { path: '/scratch', kind: 'tmpfs', sizeMib: 8 }],
  });
  try {
    assert.equal((await sb.info()).state, 'running');
    const out = await sb.exec('sh', ['-c', 'echo $GREETING; pwd; cat /host/in.txt']);
    assert.equal(out.stdout, 'hello\n/tmp\nfrom the host\n');
    assert.ok(out.success);
    const failed = await sb.shell('echo oops >&2; exit 3');
    assert.deepEqual([failed.exitCode, failed.stderr, failed.success], [3, 'oops\n', false]);
    assert.equal((await sb.exec('cat', [], { stdin: '\u0000bytes' })).stdoutBytes.toString('latin1'), '\u0000bytes');

    await assert.rejects(sb.exec('no-such-program'), (e) => e instanceof m.CommandNotFoundError && e.code === 'command_not_found');
    await assert.rejects(sb.exec('sh', ['-c', 'echo partial; sleep 30'], { timeout: 0.5 }), (e) =>
      e instanceof m.ExecTimeoutError && e.output.stdout === 'partial\n' && e.output.timedOut);
    await assert.rejects(m.Sandbox.create('node-sdk', { image: 'busybox' }), m.SandboxAlreadyExistsError);

    // for await over a discriminated union of events; stdin through the handle.
    const handle = await sb.execStream('sh', ['-c', 'read line; echo got $line; echo err >&2; exit 4']);
    await handle.writeStdin('typed\n');
    await handle.closeStdin();
    const seen = [];
    for await (const ev of handle) {
      switch (ev.type) {
        case 'started': assert.ok(ev.pid > 0); seen.push('started'); break;
        case 'stdout': seen.push(`out:${ev.data.toString().trim()}`); break;
        case 'stderr': seen.push(`err:${ev.data.toString().trim()}`); break;
        case 'exited': seen.push(`exit:${ev.exitCode}`); break;
      }
    }
    assert.equal(seen[0], 'started');
    assert.equal(seen[seen.length - 1], 'exit:4');
    assert.ok(seen.includes('out:got typed') && seen.includes('err:err'), seen.join(' '));

    await sb.fs.mkdir('/tmp/d');
    assert.equal(await sb.fs.write('/tmp/d/f.txt', 'content'), 7);
    assert.equal(await sb.fs.readText('/tmp/d/f.txt'), 'content');
    assert.equal((await sb.fs.stat('/tmp/d/f.txt')).size, 7);
    assert.deepEqual((await sb.fs.list('/tmp/d')).map((f) => path.basename(f.path)), ['f.txt']);
    await sb.fs.remove('/tmp/d');
    await assert.rejects(sb.fs.stat('/tmp/d'), m.PathNotFoundError);

    const metrics = await sb.metrics();
    assert.equal(metrics.name, 'node-sdk');
    assert.ok(metrics.memoryBytes > 0);
    assert.ok((await m.Sandbox.list()).some((i) => i.name === 'node-sdk'));
    await sb.fs.write('/tmp/kept', 'before the stop');
    assert.equal((await sb.stop(1)).state, 'stopped');
    assert.equal((await (await m.Sandbox.get('node-sdk')).info()).state, 'stopped');
    await assert.rejects(sb.exec('true'), m.SandboxNotRunningError);
    // Started again: its files as the stop left them.
    assert.equal((await sb.start()).state, 'running');
    assert.equal(await sb.fs.readText('/tmp/kept'), 'before the stop');
    assert.equal(typeof (await sb.logs()), 'string');
  } finally {
    await sb.remove();
  }
  await assert.rejects(m.Sandbox.get('node-sdk'), m.SandboxNotFoundError);
});

test('pause, resume and idle suspension', async () => {
  await assert.rejects(
    m.Sandbox.create('node-idle-bad', { image: 'busybox', memory: 64, idleTimeoutMs: 0 }),
    m.InvalidRequestError,
  );
  const sb = await m.Sandbox.create('node-idle', {
    image: 'busybox', memory: 64, isolation: 'container', idleTimeoutMs: 1000,
  });
  try {
    assert.equal((await sb.pause()).state, 'paused');
    await assert.rejects(sb.exec('true'), m.SandboxNotRunningError);
    assert.equal((await sb.resume()).state, 'running');
    assert.equal((await sb.shell('echo back')).stdout, 'back\n');
    let state = 'running';
    for (let i = 0; i < 40 && state !== 'suspended'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      state = (await sb.info()).state;
    }
    assert.equal(state, 'suspended');
    // The next command resumes it transparently.
    assert.equal((await sb.shell('echo hi')).stdout, 'hi\n');
    assert.equal((await sb.info()).state, 'running');
  } finally {
    await sb.remove();
  }
});

test('warm pools and snapshots', async () => {
  const template = { image: 'busybox', memory: 64, isolation: 'container' };
  assert.equal((await m.Pool.create('node-pool', 1, template)).size, 1);
  const ready = async (want) => {
    for (let i = 0; i < 600; i++) {
      const pool = (await m.Pool.list()).find((p) => p.name === 'node-pool');
      if (pool && pool.ready === want) return pool;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail(`pool never had ${want} ready: ${JSON.stringify(await m.Pool.list())}`);
  };
  await ready(1);
  const sb = await m.Sandbox.create('node-claimed', { ...template, env: { WHO: 'node' }, pool: 'node-pool' });
  try {
    assert.equal((await sb.info()).labels['microsandbox.dev/launch'], 'warm');
    assert.equal((await sb.shell('echo $WHO; hostname')).stdout, 'node\nnode-claimed\n');
    assert.equal((await ready(1)).claimed, 1); // refilled
    await sb.fs.write('/tmp/snap', 'kept\n');
    await sb.pause();
    const snap = await sb.snapshot('node-snap');
    assert.equal(snap.name, 'node-snap');
    const from = await m.Sandbox.create('node-from-snap', { image: snap.image, isolation: 'container' });
    try {
      assert.equal(await from.fs.readText('/tmp/snap'), 'kept\n');
      await assert.rejects(m.Snapshot.remove('node-snap'), m.SnapshotInUseError);
    } finally {
      await from.remove();
    }
    assert.deepEqual((await m.Snapshot.list()).map((s) => s.name), ['node-snap']);
    const reference = `127.0.0.1:5000/msb-test/node-snap:${process.pid}`;
    await assert.rejects(
      m.Snapshot.push('node-snap', reference, { secret: 'creds' }),
      (e) => e instanceof m.InvalidRequestError && /cluster mode only/.test(e.message),
    );
    const pushed = await m.Snapshot.push('node-snap', reference);
    assert.equal(pushed.reference, reference);
    assert.match(pushed.digest, /^sha256:/);
    await m.Snapshot.remove('node-snap');
    const pulled = await m.Sandbox.create('node-pulled', { image: reference, isolation: 'container' });
    try {
      assert.equal(await pulled.fs.readText('/tmp/snap'), 'kept\n');
    } finally {
      await pulled.remove();
    }
  } finally {
    await sb.remove();
    await m.Pool.remove('node-pool');
  }
  await assert.rejects(m.Pool.remove('node-pool'), m.PoolNotFoundError);
});

test('await using removes the sandbox', async () => {
  {
    const sb = await m.Sandbox.create('node-dispose', { image: 'busybox', memory: 64 });
    try {
      assert.equal((await sb.exec('echo', ['x'])).stdout, 'x\n');
    } finally {
      await sb[Symbol.asyncDispose]();
    }
  }
  await assert.rejects(m.Sandbox.get('node-dispose'), m.SandboxNotFoundError);
});

test("the seed README's NodeSandbox example", async () => {
  const sb = await m.NodeSandbox.create({ name: 'node-seed' });
  try {
    let exec = await sb.run("var name = 'JavaScript'");
    exec = await sb.run('console.log(`Hello ${name}!`)');
    assert.equal(await exec.output(), 'Hello JavaScript!\n');
    const err = await sb.run("throw new Error('bad value')");
    assert.ok(err.hasError() && (await err.error()).includes('Error: bad value'));
    assert.equal(await (await sb.run('name.length')).output(), '10\n');
    assert.equal(await (await sb.run('await Promise.resolve(7)')).output(), '7\n');
  } finally {
    await sb.stop();
  }
});
