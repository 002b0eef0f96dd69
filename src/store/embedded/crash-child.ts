// The process the crash test kills: it hosts an embedded store, writes from several concurrent
// writers without pause, and prints every acknowledged write as `put <key> <revision>` and every
// lease grant as `lease <id>`. Stdout to a pipe is synchronous on Linux, so a printed line means
// the acknowledgement left this process before any SIGKILL.
//
//   node crash-child.js <dataDir> [writers]

import { openEmbeddedStore } from './embedded-store.js';

const [dataDir, writersArg] = process.argv.slice(2);
if (dataDir === undefined) {
  process.stderr.write('usage: crash-child.js <dataDir> [writers]\n');
  process.exit(2);
}
const writers = Number(writersArg ?? 16);
// The parent holds our stdin; if it goes away, so do we. And never run for more than 30 s.
process.stdin.on('end', () => process.exit(3));
process.stdin.resume();
const deadline = performance.now() + 30_000;

const store = await openEmbeddedStore({ dataDir, snapshotEveryRecords: 500 });
process.stdout.write(`ready ${await store.revision()}\n`);

let next = 0;
async function writer(w: number): Promise<void> {
  while (performance.now() < deadline) {
    const i = next++;
    if (i % 97 === 0) {
      const { id } = await store.grantLease(60);
      process.stdout.write(`lease ${id}\n`);
      continue;
    }
    const key = `crash/${process.pid}/${w}/${i}`;
    const { revision } = await store.put(key, `value ${i}`);
    process.stdout.write(`put ${key} ${revision}\n`);
  }
}

await Promise.all(Array.from({ length: writers }, (_, w) => writer(w)));
await store.close();
process.exit(0);
