// The seed's example in TypeScript (checked with tsc --strict by scripts/test.sh).
import { ExecEvent, ExecTimeoutError, Sandbox } from 'microsandbox';

async function main(): Promise<void> {
  await using sb = await Sandbox.create('my-sandbox', { image: 'python', memory: 512, cpus: 2 });
  const output = await sb.exec('python3', ['-c', "print('Hello!')"]);
  process.stdout.write(output.stdout);
  const handle = await sb.execStream('python3', ['-c', 'print(1); print(2)']);
  for await (const ev of handle) {
    const e: ExecEvent = ev;
    if (e.type === 'stdout') process.stdout.write(e.data);
  }
  try {
    await sb.exec('sleep', ['5'], { timeout: 0.5 });
  } catch (e) {
    if (!(e instanceof ExecTimeoutError)) throw e;
    process.stdout.write(`timed out (exit ${e.output.exitCode})\n`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
