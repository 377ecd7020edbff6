// A small promise-based CRI (runtime.v1 RuntimeService) client over a unix socket,
// built from the trimmed proto next to this file with @grpc/proto-loader.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';

export const CRI_PROTO = fileURLToPath(new URL('./cri-runtime-v1.proto', import.meta.url));

// Message shapes as proto-loader renders them (camelCase, enums as strings, int64 as strings).
export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';
export interface NamespaceOption {
  network?: NamespaceMode;
  pid?: NamespaceMode;
  ipc?: NamespaceMode;
  targetId?: string;
}
export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}
export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  logDirectory?: string;
  dnsConfig?: { servers?: string[]; searches?: string[]; options?: string[] };
  portMappings?: Array<{ protocol?: 'TCP' | 'UDP' | 'SCTP'; containerPort?: number; hostPort?: number; hostIp?: string }>;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: {
    cgroupParent?: string;
    securityContext?: { namespaceOptions?: NamespaceOption; privileged?: boolean };
    sysctls?: Record<string, string>;
  };
}
export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  workingDir?: string;
  envs?: Array<{ key: string; value: string }>;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  logPath?: string;
  linux?: {
    securityContext?: {
      namespaceOptions?: NamespaceOption;
      privileged?: boolean;
      capabilities?: { addCapabilities?: string[]; dropCapabilities?: string[] };
    };
  };
}
export interface RuntimeCondition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}
export interface StatusResponse {
  status: { conditions: RuntimeCondition[] } | null;
  info: Record<string, string>;
}
export interface VersionResponse {
  version: string;
  runtimeName: string;
  runtimeVersion: string;
  runtimeApiVersion: string;
}
export interface PodSandboxStatusResponse {
  status: {
    id: string;
    state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
    network: { ip: string; additionalIps: Array<{ ip: string }> } | null;
    metadata: PodSandboxMetadata | null;
  } | null;
  info: Record<string, string>;
}
export interface ListPodSandboxResponse {
  items: Array<{ id: string; state: string; metadata: PodSandboxMetadata | null }>;
}
export interface ListContainersResponse {
  containers: Array<{ id: string; podSandboxId: string; state: string }>;
}
export interface ExecSyncResponse {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
}

type Unary = (req: unknown, meta: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

export class CriClient {
  private readonly client: grpc.Client;

  constructor(readonly socketPath: string) {
    const def = protoLoader.loadSync(CRI_PROTO, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor } };
    };
    this.client = new pkg.runtime.v1.RuntimeService(`unix://${socketPath}`, grpc.credentials.createInsecure());
  }

  /** Raw unary call by method name (e.g. 'RunPodSandbox'). */
  call<T>(method: string, req: object, timeoutMs = 60000): Promise<T> {
    const fn = (this.client as unknown as Record<string, Unary>)[method];
    if (typeof fn !== 'function') return Promise.reject(new Error(`CRI method ${method} not in proto`));
    return new Promise((resolve, reject) => {
      fn.call(this.client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(new Error(`CRI ${method}: ${err.details || err.message}`));
        else resolve(res as T);
      });
    });
  }

  version(): Promise<VersionResponse> {
    return this.call('Version', { version: 'v1' }, 5000);
  }
  status(verbose = false): Promise<StatusResponse> {
    return this.call('Status', { verbose }, 5000);
  }
  async runPodSandbox(config: PodSandboxConfig, runtimeHandler = ''): Promise<string> {
    const r = await this.call<{ podSandboxId: string }>('RunPodSandbox', { config, runtimeHandler });
    return r.podSandboxId;
  }
  async stopPodSandbox(podSandboxId: string): Promise<void> {
    await this.call('StopPodSandbox', { podSandboxId });
  }
  async removePodSandbox(podSandboxId: string): Promise<void> {
    await this.call('RemovePodSandbox', { podSandboxId });
  }
  podSandboxStatus(podSandboxId: string, verbose = false): Promise<PodSandboxStatusResponse> {
    return this.call('PodSandboxStatus', { podSandboxId, verbose });
  }
  listPodSandbox(): Promise<ListPodSandboxResponse> {
    return this.call('ListPodSandbox', {});
  }
  async createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string> {
    const r = await this.call<{ containerId: string }>('CreateContainer', { podSandboxId, config, sandboxConfig });
    return r.containerId;
  }
  async startContainer(containerId: string): Promise<void> {
    await this.call('StartContainer', { containerId });
  }
  async stopContainer(containerId: string, timeoutS = 0): Promise<void> {
    await this.call('StopContainer', { containerId, timeout: String(timeoutS) });
  }
  async removeContainer(containerId: string): Promise<void> {
    await this.call('RemoveContainer', { containerId });
  }
  listContainers(): Promise<ListContainersResponse> {
    return this.call('ListContainers', {});
  }
  execSync(containerId: string, cmd: string[], timeoutS = 10): Promise<ExecSyncResponse> {
    return this.call('ExecSync', { containerId, cmd, timeout: String(timeoutS) }, (timeoutS + 10) * 1000);
  }

  close(): void {
    this.client.close();
  }
}
