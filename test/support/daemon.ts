/** `plexusctl daemon` as a child process for tests: started until its socket exists, stopped by SIGTERM. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { plexusctlPath } from './plugins.js';

export async function startDaemon(socket: string, args: string[] = []): Promise<ChildProcess> {
  // A daemon killed with SIGKILL leaves its socket file: wait for the new one, not the stale one.
  rmSync(socket, { force: true });
  const daemon = spawn(plexusctlPath, ['daemon', '--socket', socket, ...args], { stdio: 'ignore' });
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
