/**
 * A pod's traffic endpoint for the network policy probe matrix, run inside the pod netns
 * (`ip netns exec NS node probe-agent.js`): it serves TCP 80 and 81 and a UDP echo on 80 (IPv4 and
 * IPv6), and probes others on request. Requests on stdin, one JSON line each
 * (`{"id", "proto": "tcp"|"udp"|"icmp", "addr", "port"}`); answers on stdout (`{"id", "ok"}`). A probe
 * that gets no answer within the timeout is "blocked".
 */
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createConnection, createServer } from 'node:net';
import { createInterface } from 'node:readline';

const TIMEOUT_MS = Number(process.env.PROBE_TIMEOUT_MS ?? 500);

// A prober that gives up resets its connection: not this agent's failure.
for (const port of [80, 81])
  createServer((s) => {
    s.on('error', () => undefined);
    s.end('ok\n');
  }).listen({ host: '::', port, ipv6Only: false });
const udp = createSocket({ type: 'udp6', ipv6Only: false });
udp.on('message', (msg, from) => udp.send(msg, from.port, from.address));
udp.bind(80, '::');

function tcp(addr: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: addr, port, timeout: TIMEOUT_MS });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.once('data', () => done(true));
    s.once('timeout', () => done(false));
    s.once('error', () => done(false));
  });
}

function udpProbe(addr: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createSocket(addr.includes(':') ? 'udp6' : 'udp4');
    const timer = setTimeout(() => done(false), TIMEOUT_MS);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.close();
      resolve(ok);
    };
    s.once('message', () => done(true));
    s.once('error', () => done(false));
    s.send('probe', port, addr);
  });
}

function icmp(addr: string): Promise<boolean> {
  return new Promise((resolve) => {
    const p = spawn('busybox', ['ping', '-c', '1', '-W', String(Math.max(1, Math.ceil(TIMEOUT_MS / 1000))), addr], { stdio: 'ignore' });
    p.on('close', (code) => resolve(code === 0));
    p.on('error', () => resolve(false));
  });
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const req = JSON.parse(line) as { id: number; proto: 'tcp' | 'udp' | 'icmp'; addr: string; port: number };
  const probe = req.proto === 'tcp' ? tcp(req.addr, req.port) : req.proto === 'udp' ? udpProbe(req.addr, req.port) : icmp(req.addr);
  void probe.then((ok) => process.stdout.write(`${JSON.stringify({ id: req.id, ok })}\n`));
});
lines.on('close', () => process.exit(0));
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
