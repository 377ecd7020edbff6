// The one internal result shape (CNI 1.1.0 superset); converted to a config's
// version only when printed (see version.ts).

export interface CniInterface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface CniIpConfig {
  /** CIDR notation: the address with the prefix length of its subnet, e.g. 10.244.1.5/24 */
  address: string;
  gateway?: string;
  /** index into interfaces */
  interface?: number;
}

export interface CniRoute {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface CniDns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface CniResult {
  cniVersion: string;
  interfaces?: CniInterface[];
  ips?: CniIpConfig[];
  routes?: CniRoute[];
  dns?: CniDns;
}

/** What the runtime passes in the environment, after validation. */
export interface CniEnv {
  command: CniCommand;
  containerId: string;
  netns: string;
  ifname: string;
  args: Record<string, string>;
  /** CNI_ARGS raw string (passed on to delegates unchanged) */
  argsRaw: string;
  path: string[];
  /** the full process environment the request came with; delegates inherit it */
  raw: Record<string, string>;
}

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';

/** A CNI request as it travels from the thin client to the agent, or from main() to the dispatcher. */
export interface CniRequest {
  env: Record<string, string>;
  stdin: string;
}

export interface CniResponse {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface Attachment {
  containerID: string;
  ifname: string;
}
