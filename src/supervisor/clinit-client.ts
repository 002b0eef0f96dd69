// The client side of clinit: one short request to the daemon's socket per command. Light on
// imports (the transport client only), since every `corral clinit GROUP LEVEL` loads it.

import { CorralError, isCorralError } from '../api/errors.js';
import { RpcClient } from '../transport/client.js';
import { CLINIT_PATHS, type Reply } from './protocol.js';
import type { SupervisorStatus } from './types.js';

export class ClinitClient {
  private readonly rpc: RpcClient;

  constructor(readonly socket: string, opts: { timeoutMs?: number } = {}) {
    this.rpc = new RpcClient({ kind: 'unix', path: socket }, { connectTimeoutMs: 5_000, requestTimeoutMs: opts.timeoutMs ?? 15_000 });
  }

  tell(group: string, level: string): Promise<Reply> {
    return this.call('POST', CLINIT_PATHS.tell, { group, level });
  }

  reread(): Promise<Reply> {
    return this.call('POST', CLINIT_PATHS.reread, {});
  }

  shutdown(): Promise<Reply> {
    return this.call('POST', CLINIT_PATHS.shutdown, {});
  }

  status(): Promise<SupervisorStatus> {
    return this.call('GET', CLINIT_PATHS.status);
  }

  close(): Promise<void> {
    return this.rpc.close();
  }

  private async call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    try {
      return await this.rpc.call<T>(method, path, body);
    } catch (err) {
      if (isCorralError(err, 'UNAVAILABLE') || isCorralError(err, 'TIMEOUT')) {
        throw new CorralError(err.code, `no clinit daemon answers on ${this.socket} (${err.message}); start one with 'corral clinit -d'`, { cause: err });
      }
      throw err;
    }
  }
}
