// CNI error codes (spec 1.1.0 "Error" section) plus podnet's own (100+).
// The error JSON goes to stdout, as skel and libcni do (see shared/reference/cni-spec.md quirk 2).

export const ErrCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnv: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  InvalidNetns: 8,
  TryAgainLater: 11,
  NotAvailable: 50,
  NotAvailableDegraded: 51,
  // podnet's own codes, documented in docs/cni-errors.md
  KernelFailure: 100,
  UnsupportedKernelFeature: 101,
  IpamExhausted: 102,
  InterfaceExists: 103,
  DelegateFailed: 104,
  AgentFailure: 105,
  CheckFailed: 106,
  HostPortInUse: 107,
  Internal: 999,
} as const;

export type ErrCodeValue = (typeof ErrCode)[keyof typeof ErrCode];

export class CniError extends Error {
  constructor(
    public readonly code: number,
    msg: string,
    public readonly details = '',
  ) {
    super(msg);
    this.name = 'CniError';
  }

  toJSON(cniVersion: string): Record<string, unknown> {
    const out: Record<string, unknown> = { cniVersion, code: this.code, msg: this.message };
    if (this.details) out.details = this.details;
    return out;
  }
}

/** Anything thrown that is not already a CniError is answered as podnet's kernel/internal code. */
export function asCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  const e = err as { name?: string; message?: string; stderr?: string };
  if (e && e.name === 'KernelError') return new CniError(ErrCode.KernelFailure, e.message ?? String(err));
  return new CniError(ErrCode.Internal, e?.message ?? String(err));
}
