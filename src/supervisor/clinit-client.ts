// The client side of clinit: one request per connection to the daemon's socket. Imports only
// node:net and the error catalogue, since every `corral clinit GROUP LEVEL` loads it.

import { connect } from 'node:net';
import { CorralError, isErrorCode } from '../api/errors.js';
import type { ClinitRequest, ClinitResponse, Reply } from './protocol.js';
import type { ReloadSummary } from './supervisor.js';
import type { SupervisorStatus } from './types.js';

export class ClinitClient {
  constructor(
    readonly socket: string,
    private readonly timeoutMs = 15_000,
  ) {}

  tell(group: string, level: string): Promise<Reply> {
    return this.request({ op: 'tell', group, level });
  }

  reread(): Promise<Reply & ReloadSummary> {
    return this.request({ op: 'reread' });
  }

  shutdown(): Promise<Reply> {
    return this.request({ op: 'shutdown' });
  }

  status(): Promise<SupervisorStatus> {
    return this.request({ op: 'status' });
  }

  /** Sends one request and reads the reply line; UNAVAILABLE when nothing answers. */
  request<T>(request: ClinitRequest): Promise<T> {
    const path = this.socket;
    return new Promise<T>((resolve, reject) => {
      const s = connect(path);
      let reply = '';
      const timer = setTimeout(() => {
        s.destroy();
        reject(new CorralError('TIMEOUT', `the clinit daemon on ${path} did not answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      s.setEncoding('utf8');
      s.once('connect', () => s.write(`${JSON.stringify(request)}\n`));
      s.on('data', (chunk: string) => (reply += chunk));
      s.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new CorralError('UNAVAILABLE', `no clinit daemon answers on ${path} (${err.code ?? err.message}); start one with 'corral clinit -d'`));
      });
      s.once('end', () => {
        clearTimeout(timer);
        s.destroy();
        let response: ClinitResponse<T>;
        try {
          response = JSON.parse(reply) as ClinitResponse<T>;
        } catch {
          reject(new CorralError('UNAVAILABLE', `the clinit daemon on ${path} closed the connection without an answer`));
          return;
        }
        if (response.ok) resolve(response.result);
        else reject(new CorralError(isErrorCode(response.error.code) ? response.error.code : 'INTERNAL', response.error.message));
      });
    });
  }
}
