'use strict';
// Exec latency of the Node.js SDK: exec("true") N times in one sandbox; prints
// "node p50_ms p99_ms create_ms stream_mib_s" (64 MiB of stdout streamed) (bench/sdks.sh compares every SDK against Rust's).
const { Sandbox } = require('..');

(async () => {
  const n = Number(process.argv[2] ?? 200);
  const create = () =>
    Sandbox.create(`bench-node-${process.pid}`, { image: 'busybox', memory: 128, isolation: 'container' });
  // Create -> first output: the median of CREATES sandboxes (one is noise).
  const CREATES = 7;
  const creates = [];
  for (let i = 0; i < CREATES; i++) {
    const t0 = process.hrtime.bigint();
    const tmp = await create();
    if ((await tmp.exec('echo', ['hi'])).stdout !== 'hi\n') throw new Error('first exec');
    creates.push(Number(process.hrtime.bigint() - t0) / 1e6);
    await tmp.remove();
  }
  creates.sort((a, b) => a - b);
  const createMs = creates[Math.floor(CREATES / 2)];
  const sb = await create();
  const times = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await sb.exec('true');
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, b) => a - b);
  const p = (q) => times[Math.round((times.length - 1) * q)];
  const t = process.hrtime.bigint();
  let bytes = 0;
  for await (const ev of await sb.execStream('head', ['-c', '67108864', '/dev/zero'])) {
    if (ev.type === 'stdout') bytes += ev.data.length;
  }
  if (bytes !== 64 << 20) throw new Error(`streamed ${bytes} bytes`);
  const mibS = 64 / (Number(process.hrtime.bigint() - t) / 1e9);
  console.log(`node ${p(0.5).toFixed(3)} ${p(0.99).toFixed(3)} ${createMs.toFixed(1)} ${mibS.toFixed(0)}`);
  await sb.remove();
})().catch((e) => { console.error(e); process.exit(1); });
