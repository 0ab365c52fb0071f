/** GET /metrics (a prom-client registry) and, where given, GET /debug (JSON) on host:port. */
import type { Server } from 'node:http';
import type { Registry } from 'prom-client';
import { listenHttp } from './listen.js';

export async function serveMetrics(registry: Registry, address: string, debug?: () => unknown): Promise<{ server: Server; base: string }> {
  return listenHttp(address, (req, res) => {
    if (debug && req.url === '/debug') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(debug(), null, 2));
    } else if (req.url === '/metrics') {
      void registry.metrics().then((text) => {
        res.writeHead(200, { 'Content-Type': registry.contentType });
        res.end(text);
      });
    } else res.writeHead(404).end();
  });
}
