// A one-line progress bar on standard error (files, bytes, rate, ETA), redrawn at most ten times a
// second, only when standard error is a terminal; cleared before the final report.

export interface ProgressSink {
  write(text: string): void;
  isTTY: boolean;
}

function bytesText(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u] as string}`;
}

function etaText(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

export class Progress {
  private files = 0;
  private bytes = 0;
  private last = 0;
  private readonly started = performance.now();
  private shown = false;

  constructor(
    private readonly sink: ProgressSink,
    private readonly label: string,
    private readonly totalFiles: number,
    private readonly totalBytes: number,
  ) {}

  add(files: number, bytes: number): void {
    this.files += files;
    this.bytes += bytes;
    const now = performance.now();
    if (now - this.last >= 100 || this.files === this.totalFiles) {
      this.last = now;
      this.draw(now);
    }
  }

  private draw(now: number): void {
    if (!this.sink.isTTY) return;
    const elapsed = (now - this.started) / 1000;
    const rate = elapsed > 0 ? this.bytes / elapsed : 0;
    const fraction = this.totalBytes > 0 ? this.bytes / this.totalBytes : this.totalFiles > 0 ? this.files / this.totalFiles : 1;
    const width = 24;
    const filled = Math.min(width, Math.round(fraction * width));
    const eta = rate > 0 ? (this.totalBytes - this.bytes) / rate : NaN;
    const bar = `${'#'.repeat(filled)}${'.'.repeat(width - filled)}`;
    this.sink.write(`\r${this.label} [${bar}] ${this.files}/${this.totalFiles} files  ${bytesText(this.bytes)}/${bytesText(this.totalBytes)}  ${bytesText(rate)}/s  ETA ${etaText(eta)}\x1b[K`);
    this.shown = true;
  }

  /** Removes the bar so the report starts on a clean line. */
  done(): void {
    if (this.shown) this.sink.write('\r\x1b[K');
    this.shown = false;
  }
}

export { bytesText };
