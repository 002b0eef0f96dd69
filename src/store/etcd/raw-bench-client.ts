// Raw etcd calls with plain grpc-js and nothing of corral's: no Store shapes, no endpoint
// failover, no request barrier, no error translation. A benchmark runs it next to EtcdStore in the
// same process against the same etcd, so the difference is what corral's layers cost. The test
// fixtures (src/testkit/etcd.ts) also use it to ask members for their status.
//
// It shares only the wire codec (proto.ts) with EtcdStore: the bytes sent are the same.

import { Client, credentials as grpcCredentials, type ChannelCredentials, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import {
  etcdRpcs,
  type LeaseGrantResponse,
  type LeaseKeepAliveRequest,
  type LeaseKeepAliveResponse,
  type PutResponse,
  type RangeResponse,
  type Rpc,
  type StatusResponse,
} from './proto.js';

export class RawEtcdClient {
  private readonly client: Client;
  private readonly rpcs = etcdRpcs();
  private keepAliveStream: ClientDuplexStream<LeaseKeepAliveRequest, LeaseKeepAliveResponse> | undefined;
  private readonly keepAliveWaiters: ((res: LeaseKeepAliveResponse | Error) => void)[] = [];

  /** `target`: "host:port". */
  constructor(
    target: string,
    private readonly timeoutMs = 5_000,
    credentials: ChannelCredentials = grpcCredentials.createInsecure(),
  ) {
    this.client = new Client(target, credentials, { 'grpc.use_local_subchannel_pool': 1 });
  }

  put(key: string, value: string, lease = '0'): Promise<PutResponse> {
    return this.unary(this.rpcs.put, { key: Buffer.from(key), value: Buffer.from(value), lease });
  }

  get(key: string): Promise<RangeResponse> {
    return this.unary(this.rpcs.range, { key: Buffer.from(key) });
  }

  /** `id`: ask for this lease id (decimal), as etcd allows; '0' lets etcd choose. */
  grant(ttlSeconds: number, id = '0'): Promise<LeaseGrantResponse> {
    return this.unary(this.rpcs.leaseGrant, { TTL: String(ttlSeconds), ID: id });
  }

  status(timeoutMs = this.timeoutMs): Promise<StatusResponse> {
    return this.unary(this.rpcs.status, {}, timeoutMs);
  }

  /** One keepalive round trip on a long-lived stream (answers come back in request order). */
  keepAliveOnce(id: string): Promise<LeaseKeepAliveResponse> {
    if (!this.keepAliveStream) {
      const stream = this.client.makeBidiStreamRequest(this.rpcs.leaseKeepAlive.path, this.rpcs.leaseKeepAlive.serialize, this.rpcs.leaseKeepAlive.deserialize);
      stream.on('data', (res: LeaseKeepAliveResponse) => this.keepAliveWaiters.shift()?.(res));
      stream.on('error', (err: Error) => {
        this.keepAliveStream = undefined;
        for (const w of this.keepAliveWaiters.splice(0)) w(err);
      });
      this.keepAliveStream = stream;
    }
    const stream = this.keepAliveStream;
    return new Promise((resolve, reject) => {
      this.keepAliveWaiters.push((res) => (res instanceof Error ? reject(res) : resolve(res)));
      stream.write({ ID: id });
    });
  }

  close(): void {
    this.keepAliveStream?.cancel();
    this.client.close();
  }

  private unary<Req, Res>(rpc: Rpc<Req, Res>, request: Req, timeoutMs = this.timeoutMs): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(rpc.path, rpc.serialize, rpc.deserialize, request, { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, res?: Res) => {
        if (err || res === undefined) reject(err ?? new Error(`${rpc.name}: no answer`));
        else resolve(res);
      });
    });
  }
}
