'use strict';
// Cluster mode of the Node.js SDK, run by tests/e2e/tests/python_sdk.rs against a real
// kube-apiserver with the operator and a node-agent (MSB_TEST_KUBECONFIG_DEV, MSB_TEST_NAMESPACE).
const test = require('node:test');
const assert = require('node:assert');
const { Sandbox, Snapshot, SandboxNotFoundError, UnsupportedFeatureError } = require('..');

const cluster = {
  kubeconfig: process.env.MSB_TEST_KUBECONFIG_DEV,
  namespace: process.env.MSB_TEST_NAMESPACE,
};

for (const agentAccess of ['direct', 'proxy']) {
  test(`create, exec, list, remove through ${agentAccess}`, async () => {
    const c = { ...cluster, agentAccess };
    const name = `js-${agentAccess}`;
    const sb = await Sandbox.create(name, {
      image: 'busybox', memory: 64, isolation: 'container', env: { GREETING: 'hi' }, cluster: c,
    });
    try {
      assert.strictEqual(sb.name, name);
      const out = await sb.shell('echo $GREETING');
      assert.strictEqual(out.stdout, 'hi\n');
      const listed = await Sandbox.list({ cluster: c });
      assert.ok(listed.length >= 1, JSON.stringify(listed));
      const again = await Sandbox.get(name, { cluster: c });
      assert.strictEqual((await again.info()).state, 'running');
    } finally {
      await sb.remove();
    }
    await assert.rejects(Sandbox.get(name, { cluster: c }), SandboxNotFoundError);
  });
}

test('what cluster mode cannot do is a typed error', async () => {
  await assert.rejects(
    Sandbox.create('js-bind', {
      image: 'busybox', volumes: [{ path: '/x', kind: 'bind', source: '/tmp' }], cluster,
    }),
    (e) => e instanceof UnsupportedFeatureError && e.code === 'cluster_unsupported',
  );
});

test('snapshots are SandboxSnapshot objects: taken, listed, pushed, removed', async () => {
  const sb = await Sandbox.create('js-snapsrc', {
    image: 'busybox', memory: 64, isolation: 'container', cluster,
  });
  try {
    await sb.shell('echo from-js > /tmp/f');
    const snap = await sb.snapshot('js-snap');
    assert.strictEqual(snap.image, 'snapshot://js-snap');
    assert.ok((await Snapshot.list({ cluster })).some((s) => s.name === 'js-snap'));
    const reference = `127.0.0.1:5000/msb-e2e/js-snap:${cluster.namespace}`;
    const pushed = await Snapshot.push('js-snap', reference, { cluster });
    assert.strictEqual(pushed.reference, reference);
    assert.match(pushed.digest, /^sha256:/);
    await Snapshot.remove('js-snap', { cluster });
    assert.ok(!(await Snapshot.list({ cluster })).some((s) => s.name === 'js-snap'));
  } finally {
    await sb.remove();
  }
});
