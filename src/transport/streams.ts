// Small helpers shared by the server's exchanges and channels and the client's input pump.

/** Resolves when a writable stream can take more data, or will never need to (it closed). */
export function drained(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done).off('close', done);
      resolve();
    };
    stream.once('drain', done).once('close', done);
  });
}

/** Ends a handler's iterator early. */
export async function closeIterator(iterator: AsyncIterator<unknown>): Promise<void> {
  try {
    await iterator.return?.();
  } catch {
    // The handler's cleanup failing must not take the server down; its signal already fired.
  }
}
