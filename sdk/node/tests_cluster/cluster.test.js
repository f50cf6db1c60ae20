'use strict';
// Cluster mode of the Node.js SDK, run by tests/e2e/tests/python_sdk.rs against a real
// kube-apiserver with the operator and a node-agent (MSB_TEST_KUBECONFIG_DEV, MSB_TEST_NAMESPACE).
const test = require('node:test');
const assert = require('node:assert');
const { Sandbox, SandboxNotFoundError, UnsupportedFeatureError } = require('..');

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
