/**
 * Each bench's key figures from its previous run, kept in docs/bench-history.json, printed beside this
 * run's: a regression shows in the table that reports it. Figures are ratios or sizes, named as in the table.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../src/sim/simnode.js';

type History = Record<string, { date: string; loadavg: number[]; figures: Record<string, number> }>;

const file = (): string => join(repoRoot(), 'docs', 'bench-history.json');

/** Markdown rows `| figure | previous run | this run |` for `bench`, and this run recorded as the previous one for next time. */
export function besidePrevious(bench: string, figures: Record<string, number>, loadavg: number[], digits = 2): string[] {
  const history: History = existsSync(file()) ? (JSON.parse(readFileSync(file(), 'utf8')) as History) : {};
  const before = history[bench];
  const rows = [
    `| figure | previous run${before ? ` (${before.date}, load ${before.loadavg.map((l) => l.toFixed(2)).join(' ')})` : ''} | this run (load ${loadavg.map((l) => l.toFixed(2)).join(' ')}) |`,
    '|---|---|---|',
    ...Object.entries(figures).map(([name, value]) => `| ${name} | ${before?.figures[name]?.toFixed(digits) ?? '–'} | ${value.toFixed(digits)} |`),
  ];
  history[bench] = { date: new Date().toISOString().slice(0, 10), loadavg, figures };
  writeFileSync(file(), `${JSON.stringify(history, null, 2)}\n`);
  return rows;
}
