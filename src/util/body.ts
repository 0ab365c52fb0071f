/** An HTTP request's body, at most `maxBytes` (events, not an async iterator: cheaper on the daemon's per-pod path). */
import type { IncomingMessage } from 'node:http';

export class BodyTooLarge extends Error {
  readonly status = 413;
}

export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= maxBytes) chunks.push(c);
      // Answered without the rest, which is dropped.
      else reject(new BodyTooLarge(`request body over ${maxBytes} bytes`));
    });
    req.once('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.once('error', reject);
  });
}
