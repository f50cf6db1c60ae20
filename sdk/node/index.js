'use strict';
// microsandbox for Node.js: the native core (napi-rs over the `microsandbox` Rust crate) with
// the language's idioms: Promises, `for await` over exec events, error classes with a `code`,
// `await using` (Symbol.asyncDispose).

const path = require('node:path');

const native = require(process.env.MSB_NODE_ADDON || path.join(__dirname, 'microsandbox.node'));

const asyncDispose = Symbol.asyncDispose ?? Symbol.for('Symbol.asyncDispose');

class MicrosandboxError extends Error {
  constructor(code, message) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}
class InvalidRequestError extends MicrosandboxError {}
class SandboxNotFoundError extends MicrosandboxError {}
class SandboxAlreadyExistsError extends MicrosandboxError {}
class SandboxNotRunningError extends MicrosandboxError {}
class CommandNotFoundError extends MicrosandboxError {}
class PathNotFoundError extends MicrosandboxError {}
class ImageNotFoundError extends MicrosandboxError {}
class AgentUnreachableError extends MicrosandboxError {}
/** Cluster mode: the Kubernetes API, the operator or a node refused or failed (`code` is
 * `cluster_<kind>`: config, forbidden, unschedulable, timeout, failed, api, ...). */
class ClusterError extends MicrosandboxError {}
class UnsupportedFeatureError extends MicrosandboxError {}
/** No warm pool of that name. */
class PoolNotFoundError extends MicrosandboxError {}
/** A sandbox made from the snapshot still exists. */
class SnapshotInUseError extends MicrosandboxError {}
class ExecTimeoutError extends MicrosandboxError {
  constructor(message, output) {
    super('exec_timeout', message);
    this.output = output;
  }
}

const CLASSES = {
  invalid_request: InvalidRequestError,
  invalid_name: InvalidRequestError,
  sandbox_not_found: SandboxNotFoundError,
  sandbox_already_exists: SandboxAlreadyExistsError,
  sandbox_not_running: SandboxNotRunningError,
  sandbox_draining: SandboxNotRunningError,
  command_not_found: CommandNotFoundError,
  path_not_found: PathNotFoundError,
  image_not_found: ImageNotFoundError,
  pool_not_found: PoolNotFoundError,
  snapshot_in_use: SnapshotInUseError,
  agent_unreachable: AgentUnreachableError,
  agent_not_installed: AgentUnreachableError,
  cluster_not_found: SandboxNotFoundError,
  cluster_already_exists: SandboxAlreadyExistsError,
  cluster_not_running: SandboxNotRunningError,
  cluster_invalid: InvalidRequestError,
  cluster_unsupported: UnsupportedFeatureError,
};

/** The native error `code: message` as its class. */
function typed(e) {
  const m = /^([a-z_]+): ([\s\S]*)$/.exec(e && e.message ? e.message : '');
  if (!m) return e;
  const Cls = CLASSES[m[1]] || (m[1].startsWith('cluster_') ? ClusterError : MicrosandboxError);
  const err = Cls === MicrosandboxError ? new MicrosandboxError(m[1], m[2]) : new Cls(m[1], m[2]);
  err.cause = e;
  return err;
}

/** The agent's snake_case answers with camelCase keys (JavaScript's convention). */
function camel(v) {
  if (Array.isArray(v)) return v.map(camel);
  if (v === null || typeof v !== 'object' || Buffer.isBuffer(v)) return v;
  return Object.fromEntries(
    Object.entries(v).map(([k, x]) => [k.replace(/_([a-z])/g, (_, c) => c.toUpperCase()), camel(x)]),
  );
}

async function call(f) {
  try {
    return await f();
  } catch (e) {
    throw typed(e);
  }
}

class ExecOutput {
  constructor(r) {
    this.exitCode = r.exitCode;
    this.signal = r.signal ?? null;
    this.timedOut = r.timedOut;
    this.stdoutBytes = r.stdout;
    this.stderrBytes = r.stderr;
  }
  get stdout() {
    return this.stdoutBytes.toString('utf8');
  }
  get stderr() {
    return this.stderrBytes.toString('utf8');
  }
  get success() {
    return this.exitCode === 0 && this.signal === null && !this.timedOut;
  }
}

function execOptions(args, options = {}) {
  const o = { ...options, args: args ?? options.args };
  if (o.timeout !== undefined) {
    o.timeoutMs = o.timeout * 1000;
    delete o.timeout;
  }
  if (typeof o.stdin === 'string') o.stdin = Buffer.from(o.stdin);
  return o;
}

function event(e) {
  switch (e.type) {
    case 'started':
      return { type: 'started', pid: e.pid };
    case 'stdout':
    case 'stderr':
      return { type: e.type, data: e.data };
    default:
      return { type: 'exited', exitCode: e.exitCode, signal: e.signal ?? null, timedOut: e.timedOut };
  }
}

class ExecHandle {
  constructor(stream) {
    this._stream = stream;
    this.pid = null;
    this.exit = null;
  }
  async next() {
    const e = await call(() => this._stream.next());
    if (e === null) return null;
    const ev = event(e);
    if (ev.type === 'started') this.pid = ev.pid;
    if (ev.type === 'exited') this.exit = ev;
    return ev;
  }
  async *[Symbol.asyncIterator]() {
    for (let ev = await this.next(); ev !== null; ev = await this.next()) yield ev;
  }
  writeStdin(data) {
    return call(() => this._stream.writeStdin(typeof data === 'string' ? Buffer.from(data) : Buffer.from(data)));
  }
  closeStdin() {
    return call(() => this._stream.closeStdin());
  }
  signal(signal) {
    return call(() => this._stream.signal(signal));
  }
  /** Collects the rest; throws ExecTimeoutError (with the output) if it was killed at its timeout. */
  async wait() {
    const out = [], err = [];
    for await (const ev of this) {
      if (ev.type === 'stdout') out.push(ev.data);
      if (ev.type === 'stderr') err.push(ev.data);
    }
    const ex = this.exit ?? { exitCode: -1, signal: null, timedOut: false };
    const output = new ExecOutput({
      exitCode: ex.exitCode, signal: ex.signal, timedOut: ex.timedOut,
      stdout: Buffer.concat(out), stderr: Buffer.concat(err),
    });
    if (output.timedOut) throw new ExecTimeoutError('the command timed out and was killed', output);
    return output;
  }
}

class SandboxFs {
  constructor(native) {
    this._n = native;
  }
  read(path) { return call(() => this._n.readFile(path)); }
  async readText(path) { return (await this.read(path)).toString('utf8'); }
  write(path, data) {
    return call(() => this._n.writeFile(path, typeof data === 'string' ? Buffer.from(data) : Buffer.from(data)));
  }
  async list(path) { return camel(await call(() => this._n.listDir(path))); }
  async stat(path) { return camel(await call(() => this._n.stat(path))); }
  mkdir(path) { return call(() => this._n.mkdir(path)); }
  remove(path) { return call(() => this._n.removePath(path)); }
}

class Sandbox {
  constructor(n) {
    this._n = n;
    this.fs = new SandboxFs(n);
  }
  /** Pulls the image if needed and boots a sandbox; starts the local agent when none runs. */
  static async create(name, options = {}) {
    return new Sandbox(await call(() => native.NativeSandbox.create(name, options)));
  }
  /** `options.cluster`: a Sandbox object of that cluster instead of the local agent's. */
  static async get(name, options = {}) {
    return new Sandbox(await call(() => native.NativeSandbox.get(name, options.cluster)));
  }
  static async list(options = {}) { return camel(await call(() => native.listSandboxes(options.cluster))); }
  static remove(name, options = {}) { return call(() => native.removeSandbox(name, options.cluster)); }
  get name() { return this._n.name; }
  async info() { return camel(await call(() => this._n.info())); }
  /** Runs to completion; throws ExecTimeoutError (with the output) past `timeout` seconds. */
  async exec(command, args, options) {
    const r = new ExecOutput(await call(() => this._n.exec(command, execOptions(args, options))));
    if (r.timedOut) throw new ExecTimeoutError('the command timed out and was killed', r);
    return r;
  }
  shell(script, options) { return this.exec('/bin/sh', ['-c', script], options); }
  async execStream(command, args, options) {
    return new ExecHandle(await call(() => this._n.execStream(command, execOptions(args, options))));
  }
  async metrics() { return camel(await call(() => this._n.metrics())); }
  /** Its own output (a microVM's console, a container's init log), as text. */
  async logs(tailBytes) { return (await call(() => this._n.logs(tailBytes))).toString('utf8'); }
  /** Starts it again after a stop: its files as the stop left them. */
  async start() { return camel(await call(() => this._n.start())); }
  /** Freezes every process (memory kept, no CPU); commands are refused until resume(). */
  async pause() { return camel(await call(() => this._n.pause())); }
  /** Thaws a paused (or idle-suspended) sandbox. */
  async resume() { return camel(await call(() => this._n.resume())); }
  async stop(graceSeconds) {
    return camel(await call(() => this._n.stop(graceSeconds === undefined ? undefined : graceSeconds * 1000)));
  }
  /** Saves its files (pause or stop it first) as snapshot `name` on its node; new sandboxes
   * start from it with `{ image: snapshot.image }`. Local mode only. */
  async snapshot(name) { return camel(await call(() => this._n.snapshot(name))); }
  async kill() { return camel(await call(() => this._n.kill())); }
  remove() { return call(() => this._n.remove()); }
  async [asyncDispose]() { await this.remove(); }
}

/** Warm pools of the local agent: sandboxes of a template kept started, so that
 * `Sandbox.create(name, { pool })` takes one instead of booting. */
class Pool {
  /** Creates (or changes) pool `name`: `size` sandboxes of `template` kept started. A create
   * naming the pool is served from it when it asks for the same image, memory, cpus, isolation
   * and network; its own name, env and workdir are applied at the claim. */
  static async create(name, size, template = {}) {
    return camel(await call(() => native.createPool(name, size, template)));
  }
  static async list() { return camel(await call(() => native.listPools())); }
  /** Deletes the pool and its unclaimed sandboxes (claimed ones are their users'). */
  static remove(name) { return call(() => native.removePool(name)); }
}

/** Snapshots of the local agent (made by `sandbox.snapshot(name)`). */
class Snapshot {
  /** `options.cluster`: the namespace's taken SandboxSnapshots instead of the local agent's. */
  static async list(options = {}) { return camel(await call(() => native.listSnapshots(options.cluster))); }
  /** Refused (SnapshotInUseError) while a sandbox made from it exists; `options.cluster`: deletes
   * the SandboxSnapshot. */
  static remove(name, options = {}) { return call(() => native.removeSnapshot(name, options.cluster)); }
  /** Pushes snapshot `name` to a registry as image `reference`; resolves to `{reference, digest}`.
   * `options.cluster`: pushes the SandboxSnapshot, with the credentials of `options.secret` (a
   * docker-config Secret of the namespace; without, anonymously). */
  static async push(name, reference, options = {}) {
    return camel(await call(() => native.pushSnapshot(name, reference, options.cluster, options.secret)));
  }
}

// The earlier SDK's API (the seed README's example): a persistent Node.js context per sandbox,
// run by the Rust SDK's driver (microsandbox::repl; JSON lines in, an end marker per run out).
const NODE_DRIVER = native.nodeReplDriver();

class Execution {
  constructor(stdout, stderr, status) {
    this._stdout = stdout;
    this._stderr = stderr;
    this.status = status;
    this.language = 'nodejs';
  }
  async output() { return this._stdout; }
  async error() { return this._stderr; }
  hasError() { return this.status !== 'success'; }
}

class NodeSandbox {
  constructor(sb) {
    this._sb = sb;
    this._repl = null;
    this._next = 0;
    this._queue = Promise.resolve();
  }
  static async create(options = {}) {
    const name = options.name ?? `node-${process.pid}-${Date.now().toString(36)}`;
    return new NodeSandbox(await Sandbox.create(name, { image: options.image ?? 'node', memory: options.memory, cpus: options.cpus }));
  }
  async _start() {
    const tok = `__msb_${Math.random().toString(36).slice(2)}__`;
    const handle = await this._sb.execStream('node', ['-e', NODE_DRIVER, tok]);
    const repl = { handle, tok, out: Buffer.alloc(0), err: Buffer.alloc(0), waiters: [], done: false };
    (async () => {
      for await (const ev of handle) {
        if (ev.type === 'stdout') repl.out = Buffer.concat([repl.out, ev.data]);
        if (ev.type === 'stderr') repl.err = Buffer.concat([repl.err, ev.data]);
        repl.waiters.splice(0).forEach((w) => w());
      }
      repl.done = true;
      repl.waiters.splice(0).forEach((w) => w());
    })().catch(() => { repl.done = true; repl.waiters.splice(0).forEach((w) => w()); });
    return repl;
  }
  /** Runs `code` in the sandbox's Node.js context; state persists between runs. */
  run(code) {
    const result = this._queue.then(() => this._run(code));
    this._queue = result.catch(() => {});
    return result;
  }
  async _run(code) {
    if (!this._repl || this._repl.done) this._repl = await this._start();
    const repl = this._repl, id = this._next++;
    const marker = `${repl.tok}:${id}:`;
    await repl.handle.writeStdin(JSON.stringify({ id, code }) + '\n');
    const find = (buf) => { const i = buf.indexOf(marker); return i < 0 ? null : i; };
    while (!repl.done && (find(repl.out) === null || find(repl.err) === null)) {
      await new Promise((r) => repl.waiters.push(r));
    }
    const cut = (which) => {
      const buf = repl[which], i = find(buf);
      if (i === null) { repl[which] = Buffer.alloc(0); return [buf.toString('utf8'), null]; }
      const end = buf.indexOf('\n', i);
      const status = buf.subarray(i + marker.length, end).toString('utf8');
      repl[which] = buf.subarray(end + 1);
      return [buf.subarray(0, i).toString('utf8'), status];
    };
    const [out, status] = cut('out');
    const [err] = cut('err');
    if (status === null) return new Execution(out, err + '\nthe interpreter exited; its state is lost\n', 'error');
    return new Execution(out, err, status === 'ok' ? 'success' : 'error');
  }
  async stop() {
    this._repl = null;
    await this._sb.remove();
  }
  async [asyncDispose]() { await this.stop(); }
}

module.exports = {
  Sandbox, Pool, Snapshot, ExecHandle, ExecOutput, SandboxFs, NodeSandbox, Execution,
  MicrosandboxError, InvalidRequestError, SandboxNotFoundError, SandboxAlreadyExistsError,
  SandboxNotRunningError, CommandNotFoundError, PathNotFoundError, ImageNotFoundError,
  AgentUnreachableError, ExecTimeoutError, ClusterError, UnsupportedFeatureError,
  PoolNotFoundError, SnapshotInUseError,
};
