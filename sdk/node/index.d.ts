// Types of the microsandbox Node.js SDK (index.js over the native core).

/// <reference types="node" />

export interface VolumeMount {
  /** Where in the sandbox. */
  path: string;
  kind: 'bind' | 'named' | 'tmpfs';
  /** The host directory (bind) or the volume's name (named). */
  source?: string;
  readonly?: boolean;
  sizeMib?: number;
}

export interface CreateOptions {
  /** OCI image (default "python"). */
  image?: string;
  /** MiB (default 512). */
  memory?: number;
  cpus?: number;
  env?: Record<string, string>;
  workdir?: string;
  isolation?: 'microvm' | 'container';
  /** Survive this process (until removed). */
  detached?: boolean;
  network?: 'none' | 'public_only' | 'allow_all';
  volumes?: VolumeMount[];
  /** Suspend it (state "suspended": frozen, memory kept) after this many ms without a command
   * or file operation; the next one resumes it transparently. */
  idleTimeoutMs?: number;
  /** Take a started sandbox of this warm pool (see Pool) when the options match its template;
   * otherwise boot one. The sandbox's labels say which: "microsandbox.dev/launch" is "warm". */
  pool?: string;
  /** Cluster mode: create a Sandbox object of this cluster instead (detached does not apply). */
  cluster?: ClusterOptions;
}

/** Cluster mode: where Sandbox objects live (kubeconfig as kubectl finds it by default). */
export interface ClusterOptions {
  kubeconfig?: string;
  context?: string;
  /** Namespace of the objects; default the context's. */
  namespace?: string;
  /** How long create waits for Ready (default 120000). */
  readyTimeoutMs?: number;
  /** How exec and files reach the node-agent (default "auto"). */
  agentAccess?: 'auto' | 'direct' | 'proxy';
}

/** Which sandboxes a static call means: the local agent's, or a cluster's. */
export interface ModeOptions {
  cluster?: ClusterOptions;
}

export interface ExecOptions {
  cwd?: string;
  env?: Record<string, string>;
  user?: string;
  /** Seconds before the command is killed (then ExecTimeoutError). */
  timeout?: number;
  /** Fed to stdin (then closed); collected exec only. */
  stdin?: string | Uint8Array;
}

export type SandboxState =
  | 'creating'
  | 'running'
  | 'paused'
  | 'suspended'
  | 'draining'
  | 'stopped'
  | 'failed';

export interface SandboxInfo {
  name: string;
  image: string;
  imageDigest: string;
  isolation: 'microvm' | 'container';
  state: SandboxState;
  memoryMib: number;
  cpus: number;
  detached: boolean;
  createdAt: number;
  reason?: string | null;
  labels?: Record<string, string>;
}

export interface Metrics {
  name: string;
  cpuUsageUs: number;
  memoryBytes: number;
  memoryLimitBytes: number | null;
  diskReadBytes: number;
  diskWriteBytes: number;
  netRxBytes: number;
  netTxBytes: number;
  processes: number;
}

export interface FileStat {
  path: string;
  kind: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtime: number;
}

export type ExecEvent =
  | { type: 'started'; pid: number }
  | { type: 'stdout'; data: Buffer }
  | { type: 'stderr'; data: Buffer }
  | { type: 'exited'; exitCode: number; signal: number | null; timedOut: boolean };

export declare class ExecOutput {
  readonly exitCode: number;
  readonly signal: number | null;
  readonly timedOut: boolean;
  readonly stdoutBytes: Buffer;
  readonly stderrBytes: Buffer;
  get stdout(): string;
  get stderr(): string;
  get success(): boolean;
}

export declare class ExecHandle implements AsyncIterable<ExecEvent> {
  pid: number | null;
  exit: Extract<ExecEvent, { type: 'exited' }> | null;
  next(): Promise<ExecEvent | null>;
  [Symbol.asyncIterator](): AsyncIterator<ExecEvent>;
  writeStdin(data: string | Uint8Array): Promise<void>;
  closeStdin(): Promise<void>;
  signal(signal: number): Promise<void>;
  /** The rest of the output; throws ExecTimeoutError if it was killed at its timeout. */
  wait(): Promise<ExecOutput>;
}

export declare class SandboxFs {
  read(path: string): Promise<Buffer>;
  readText(path: string): Promise<string>;
  write(path: string, data: string | Uint8Array): Promise<number>;
  list(path: string): Promise<FileStat[]>;
  stat(path: string): Promise<FileStat>;
  mkdir(path: string): Promise<void>;
  remove(path: string): Promise<void>;
}

export declare class Sandbox {
  /** Pulls the image if needed and boots a sandbox; starts the local agent when none runs. */
  static create(name: string, options?: CreateOptions): Promise<Sandbox>;
  static get(name: string, options?: ModeOptions): Promise<Sandbox>;
  static list(options?: ModeOptions): Promise<SandboxInfo[]>;
  static remove(name: string, options?: ModeOptions): Promise<void>;
  readonly name: string;
  readonly fs: SandboxFs;
  info(): Promise<SandboxInfo>;
  exec(command: string, args?: string[], options?: ExecOptions): Promise<ExecOutput>;
  shell(script: string, options?: ExecOptions): Promise<ExecOutput>;
  execStream(command: string, args?: string[], options?: Omit<ExecOptions, 'stdin'>): Promise<ExecHandle>;
  metrics(): Promise<Metrics>;
  /** SIGTERM, SIGKILL after graceSeconds; it stays listed as stopped until removed. */
  stop(graceSeconds?: number): Promise<SandboxInfo>;
  kill(): Promise<SandboxInfo>;
  /** Its own output (a microVM's console, a container's init log); at most tailBytes. */
  logs(tailBytes?: number): Promise<string>;
  /** Starts a stopped sandbox again, its files as the stop left them. */
  start(): Promise<SandboxInfo>;
  /** Freezes every process (memory kept, no CPU); commands are refused until resume(). In
   * cluster mode sets spec.paused and waits for the node-agent. */
  pause(): Promise<SandboxInfo>;
  /** Thaws a paused (or idle-suspended) sandbox. */
  resume(): Promise<SandboxInfo>;
  /** Saves its files (pause or stop it first) as snapshot `name` on its node; new sandboxes
   * start from it with `{ image: snapshot.image }`. Local mode only. */
  snapshot(name: string): Promise<SnapshotInfo>;
  remove(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface PoolInfo {
  name: string;
  /** Sandboxes it keeps started. */
  size: number;
  /** Started and unclaimed now. */
  ready: number;
  /** Creates served from it so far. */
  claimed: number;
  image: string;
}

export interface SnapshotInfo {
  name: string;
  /** The image to create sandboxes from it with. */
  image: string;
  /** Digest of its content (layers and config). */
  digest: string;
  /** Layers: the sandbox image's, then the snapshot's own. */
  layers: number;
}

/** Warm pools of the local agent: sandboxes of a template kept started. */
export declare class Pool {
  /** Creates (or changes) pool `name`: `size` sandboxes of `template` kept started. A create
   * naming it is served from it when it asks for the same image, memory, cpus, isolation and
   * network; its own name, env and workdir are applied at the claim. */
  static create(name: string, size: number, template?: Omit<CreateOptions, 'pool' | 'cluster' | 'detached'>): Promise<PoolInfo>;
  static list(): Promise<PoolInfo[]>;
  /** Deletes the pool and its unclaimed sandboxes (PoolNotFoundError if there is none). */
  static remove(name: string): Promise<void>;
}

/** Snapshots of the local agent (made by sandbox.snapshot(name)). */
export interface PushOptions extends ModeOptions {
  /** Cluster mode: a docker-config Secret of the namespace with the registry's credentials. */
  secret?: string;
}

export declare class Snapshot {
  /** `options.cluster`: the namespace's taken SandboxSnapshots. */
  static list(options?: ModeOptions): Promise<SnapshotInfo[]>;
  /** Refused (SnapshotInUseError) while a sandbox made from it exists; in cluster mode deletes
   * the SandboxSnapshot. */
  static remove(name: string, options?: ModeOptions): Promise<void>;
  /**
   * Pushes snapshot `name` to a registry as image `reference` (with the agent's registry
   * credentials; in cluster mode the SandboxSnapshot, with those of `options.secret`):
   * `Sandbox.create(name, { image: pushed.reference })` starts from it on any machine that can
   * pull it.
   */
  static push(
    name: string,
    reference: string,
    options?: PushOptions,
  ): Promise<{ reference: string; digest: string }>;
}

export declare class Execution {
  readonly status: 'success' | 'error';
  readonly language: string;
  output(): Promise<string>;
  error(): Promise<string>;
  hasError(): boolean;
}

/** The earlier SDK's API: a persistent Node.js context per sandbox (image "node"). */
export declare class NodeSandbox {
  static create(options?: { name?: string; image?: string; memory?: number; cpus?: number }): Promise<NodeSandbox>;
  run(code: string): Promise<Execution>;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export declare class MicrosandboxError extends Error {
  /** The agent's error code, e.g. "sandbox_not_found". */
  readonly code: string;
}
export declare class InvalidRequestError extends MicrosandboxError {}
export declare class SandboxNotFoundError extends MicrosandboxError {}
export declare class SandboxAlreadyExistsError extends MicrosandboxError {}
export declare class SandboxNotRunningError extends MicrosandboxError {}
export declare class CommandNotFoundError extends MicrosandboxError {}
export declare class PathNotFoundError extends MicrosandboxError {}
export declare class ImageNotFoundError extends MicrosandboxError {}
export declare class AgentUnreachableError extends MicrosandboxError {}
/** Cluster mode failures; `code` is `cluster_<kind>` (config, forbidden, unschedulable, ...). */
export declare class ClusterError extends MicrosandboxError {}
export declare class UnsupportedFeatureError extends MicrosandboxError {}
export declare class PoolNotFoundError extends MicrosandboxError {}
export declare class SnapshotInUseError extends MicrosandboxError {}
export declare class ExecTimeoutError extends MicrosandboxError {
  /** What the command wrote until it was killed. */
  readonly output: ExecOutput;
}
