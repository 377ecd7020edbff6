// IPAM for the main plugin: podnet's own allocator is called in-process (no exec, no second
// Node start-up); any other type (host-local, ...) is delegated through CNI_PATH.
import type { CniContext } from './skel.js';
import type { CniResult } from './types.js';
import { delegateAdd, execDelegate } from './delegate.js';
import { ipamAdd, ipamCheck, ipamDel, ipamGc, ipamStatus } from '../ipam/plugin.js';

export interface IpamClient {
  add(ctx: CniContext): Promise<CniResult>;
  del(ctx: CniContext): Promise<void>;
  check(ctx: CniContext): Promise<void>;
  status(ctx: CniContext): Promise<void>;
  gc(ctx: CniContext): Promise<void>;
}

const inProcess: IpamClient = { add: ipamAdd, del: ipamDel, check: ipamCheck, status: ipamStatus, gc: ipamGc };

function delegated(type: string): IpamClient {
  const run = async (ctx: CniContext, cmd: string) => {
    await execDelegate(type, cmd, ctx.env.raw, ctx.env.path, ctx.stdin);
  };
  return {
    add: (ctx) => delegateAdd(type, ctx.env.raw, ctx.env.path, ctx.stdin, ctx.cniVersion),
    del: (ctx) => run(ctx, 'DEL'),
    check: (ctx) => run(ctx, 'CHECK'),
    status: (ctx) => run(ctx, 'STATUS'),
    gc: (ctx) => run(ctx, 'GC'),
  };
}

export function ipamClient(type: string): IpamClient {
  return type === 'podnet-ipam' ? inProcess : delegated(type);
}
