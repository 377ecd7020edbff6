// Concurrent host-veth deletions go to the kernel together; a failed group is retried link by
// link so each caller gets its own outcome.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deleteLinkBatched } from '../../src/cni/modes/link-deleter.js';
import type { KernelAdapter, KernelOp, NetnsRef } from '../../src/kernel/types.js';

function fakeKernel(opts: { failGroup?: boolean; failName?: string } = {}) {
  const calls: string[][] = [];
  const k = {
    async deleteLinksTogether(_ns: NetnsRef, names: string[]) {
      calls.push(['group', ...names]);
      await new Promise((r) => setTimeout(r, 20)); // the kernel's RCU wait
      if (opts.failGroup) throw new Error('group delete failed');
    },
    async apply(_ns: NetnsRef, ops: KernelOp[]) {
      for (const op of ops) {
        if (op.op !== 'link-del') throw new Error('unexpected op');
        calls.push(['one', op.name]);
        if (op.name === opts.failName) throw new Error(`cannot delete ${op.name}`);
      }
    },
  } as unknown as KernelAdapter;
  return { k, calls };
}

const NS: NetnsRef = { kind: 'current' };

test('deletions of one turn go together; those arriving while the kernel works form the next group', async () => {
  const { k, calls } = fakeKernel();
  const first = [deleteLinkBatched(k, NS, 'a'), deleteLinkBatched(k, NS, 'b'), deleteLinkBatched(k, NS, 'c')];
  await new Promise((r) => setTimeout(r, 5));
  const later = [deleteLinkBatched(k, NS, 'd'), deleteLinkBatched(k, NS, 'e')];
  await Promise.all([...first, ...later]);
  assert.deepEqual(calls, [['group', 'a', 'b', 'c'], ['group', 'd', 'e']]);
});

test('a failed group is retried link by link: only the link that fails rejects', async () => {
  const { k, calls } = fakeKernel({ failGroup: true, failName: 'y' });
  const r = await Promise.allSettled([deleteLinkBatched(k, NS, 'x'), deleteLinkBatched(k, NS, 'y'), deleteLinkBatched(k, NS, 'z')]);
  assert.deepEqual(r.map((o) => o.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.deepEqual(calls, [['group', 'x', 'y', 'z'], ['one', 'x'], ['one', 'y'], ['one', 'z']]);
});

test('without deleteLinksTogether the adapter deletes them one by one in one apply', async () => {
  const calls: KernelOp[][] = [];
  const k = { apply: async (_ns: NetnsRef, ops: KernelOp[]) => void calls.push(ops) } as unknown as KernelAdapter;
  await Promise.all([deleteLinkBatched(k, NS, 'p'), deleteLinkBatched(k, NS, 'q')]);
  assert.deepEqual(calls, [[{ op: 'link-del', name: 'p', ignoreMissing: true }, { op: 'link-del', name: 'q', ignoreMissing: true }]]);
});
