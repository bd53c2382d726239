// What the browser end-to-end scripts (cohost.ts, outside.ts) share: their environment,
// their patience, their log, and the Chromium switches both need.

/** How long a step may take before the script gives up on it. */
export const PATIENCE_MS = 60_000;

/** Chromium without the background traffic and first-run pages a test does not want. */
export const QUIET_CHROMIUM = [
  '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run',
  '--disable-default-apps', '--disable-sync', '--metrics-recording-only', '--disable-domain-reliability',
];

/** The environment variable `name` (or `fallback`); throws when neither is set. */
export function env(name: string, fallback?: string): string {
  const v = process.env[name] ?? fallback;
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

/** A log function writing `<prefix>: text` lines to stderr. */
export function logger(prefix: string): (text: string) => void {
  return (text) => process.stderr.write(`${prefix}: ${text}\n`);
}

/** Polls `check` every 50 ms until it returns a value (not undefined or false), or throws after `ms`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined | false>, ms = PATIENCE_MS): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
