/** `plexusctl daemon` as a child process for tests: started until its socket exists, stopped by SIGTERM. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { plexusctlPath } from './plugins.js';

export interface DaemonProcess extends ChildProcess {
  /** The daemon's JSON log lines so far. */
  logs: Record<string, unknown>[];
}

export async function startDaemon(socket: string, args: string[] = []): Promise<DaemonProcess> {
  // A daemon killed with SIGKILL leaves its socket file: wait for the new one, not the stale one.
  rmSync(socket, { force: true });
  const metrics = args.includes('--metrics-address') ? [] : ['--metrics-address', '127.0.0.1:0'];
  const daemon = spawn(plexusctlPath, ['daemon', '--socket', socket, ...metrics, ...args], { stdio: ['ignore', 'ignore', 'pipe'] }) as DaemonProcess;
  daemon.logs = [];
  let partial = '';
  daemon.stderr!.on('data', (c: Buffer) => {
    const lines = (partial + c.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        daemon.logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        /* not a log line */
      }
    }
  });
  for (let i = 0; i < 100 && !existsSync(socket); i++) await sleep(50);
  if (!existsSync(socket)) throw new Error(`plexusctl daemon did not create ${socket}`);
  return daemon;
}

export async function stopDaemon(daemon: ChildProcess | undefined): Promise<void> {
  if (!daemon || daemon.exitCode !== null || daemon.signalCode !== null) return;
  const exited = new Promise((r) => daemon.once('exit', r));
  daemon.kill('SIGTERM');
  await exited;
}
