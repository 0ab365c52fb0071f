/** A small HTTP endpoint (metrics, debug) on `host:port`; port 0 picks a free one. */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export async function listenHttp(address: string, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; base: string }> {
  const at = address.lastIndexOf(':');
  const host = address.slice(0, at) || '127.0.0.1';
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(Number(address.slice(at + 1)), host, resolve));
  return { server, base: `http://${host}:${(server.address() as AddressInfo).port}` };
}
