/**
 * @file Bench section `llamacpp`: llama.cpp's token generation (`llama-bench -p 0 -n N`: N
 * one-token decodes from an empty KV cache) beside qgrad's `generate()` (a one-token prompt, N new
 * tokens: the same N one-token forwards) on the same Llama — the tiny Llama and a D=512 one —
 * exported by `exportGguf` as F32, Q8_0, Q4_0 and TQ2_0 from the QAT codes of qgrad's packed
 * model, at 1 and 2 threads. One thread: process CPU time per token on both sides (qgrad's
 * `cpuMs`; llama.cpp's from the rusage of llama-bench runs of two lengths, the difference
 * dropping its load and warm-up). Two threads: wall time, each side at its better idle-wait
 * setting (qgrad's workers' spin, llama.cpp's --poll; llama.cpp always with
 * OMP_WAIT_POLICY=PASSIVE). qgrad runs in child processes, one per thread count (the wasm
 * engine's threads are fixed when it starts). Needs LLAMA_CPP_BIN, the directory holding
 * llama-bench; without it one line says the section was skipped. Where LLAMA_CPP_BIN also holds
 * test-backend-ops, a matvec table beside it: llama.cpp's own MUL_MAT figure (`test-backend-ops
 * perf`, one row of x, 1 thread) against qgrad's float32 and packed matvec on the same shape.
 * Whether llama.cpp computes the
 * same logits from these exports is packages/quant/test/export/gguf-llama-cpp.test.ts's job.
 * Run alone: LLAMA_CPP_BIN=… npm run bench -- --sections llamacpp [--quick]
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as q from '@qgrad/core';
import { Llama, tinyLlamaConfig, type LlamaConfig } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { type BenchContext, cpuMs } from './context.js';
import { median } from './matmul.js';
import { FORMATS, keptWeight, type Format as PackedFormat } from './packed.js';

type Format = 'F32' | 'Q8_0' | 'Q4_0' | 'TQ2_0';

/** The QAT weight config whose codes each GGUF type stores as they are (group = the type's block, or a multiple). */
const WEIGHTS: Record<Format, Q.WeightQuantConfig | null> = {
  F32: null,
  Q8_0: { grid: 'int', bits: 8, granularity: { group: 32 } },
  Q4_0: { grid: 'int', bits: 4, granularity: { group: 32 } },
  TQ2_0: { grid: 'ternary', granularity: { group: 256 } },
};

interface ModelSpec {
  name: string;
  cfg: LlamaConfig;
  formats: Format[];
}

const MODELS: ModelSpec[] = [
  // the tiny Llama's rows of 128 and 384 split into no 256-block: TQ2_0 would leave every matrix F32
  { name: 'tiny D=128', cfg: tinyLlamaConfig, formats: ['F32', 'Q8_0', 'Q4_0'] },
  { name: 'D=512', cfg: { ...tinyLlamaConfig, dim: 512, nHeads: 8, nKvHeads: 4, hiddenDim: 1536 }, formats: ['F32', 'Q8_0', 'Q4_0', 'TQ2_0'] },
];

const key = (m: ModelSpec, f: Format) => `${m.name} ${f}`;

/** The seeded model in a format: float, or QAT on every Linear and the embedding, calibrated and converted to packed codes. */
function build(m: ModelSpec, f: Format): Llama {
  const llama = new Llama(m.cfg, { generator: new q.Generator(5) });
  const weight = WEIGHTS[f];
  if (weight) {
    Q.prepareQAT(llama, { default: { weight }, types: ['Linear', 'Embedding'] });
    llama.eval();
    q.noGrad(() => llama.forward(q.tensor([[1, 2, 3]], { dtype: 'int32' }))); // data-driven scales
    Q.convert(llama, { kernel: 'packed' });
  }
  return llama.eval();
}

interface Timing {
  /** Median wall ms per generated token. */
  wallMs: number;
  /** Median process CPU ms per generated token (every thread's: with 2 threads it holds the idle spin too). */
  cpuMs: number;
}

/**
 * The child's side: each model's generate() timed in this process (threads from QGRAD_THREADS),
 * calls repeated until `budgetMs` of CPU time and at least 3, after a warm-up of two calls.
 */
function timeGenerate(tokens: number, budgetMs: number): Record<string, Timing> {
  q.setBackend('wasm');
  const out: Record<string, Timing> = {};
  const prompt = q.tensor([[1]], { dtype: 'int32' });
  for (const m of MODELS) {
    for (const f of m.formats) {
      const llama = build(m, f);
      const call = () => void llama.generate(prompt, tokens, { temperature: 0 });
      call();
      call();
      const walls: number[] = [];
      const cpus: number[] = [];
      for (let spent = 0; spent < budgetMs || walls.length < 3;) {
        const t = performance.now();
        const c = cpuMs(call);
        walls.push(performance.now() - t);
        cpus.push(c);
        spent += c;
      }
      out[key(m, f)] = { wallMs: median(walls) / tokens, cpuMs: median(cpus) / tokens };
    }
  }
  return out;
}

/** CPU ms of this process's waited-for children so far (Linux: /proc/self/stat cutime + cstime, in clock ticks of 10 ms). */
function childrenCpuMs(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

interface BenchRecord {
  samples_ns: number[];
  build_commit: string;
  cpu_info: string;
  model_type: string;
  model_size: number;
}

/** One llama-bench run (its JSON record) and the CPU time it took, load and warm-up included. */
function llamaBench(bin: string, file: string, tokens: number, threads: number, poll: number, reps: number): { rec: BenchRecord; cpu: number } {
  const args = ['-m', file, '-p', '0', '-n', `${tokens}`, '-t', `${threads}`, '--poll', `${poll}`, '-r', `${reps}`, '-o', 'json'];
  // ggml's threads are OpenMP's here: with its default active wait, two threads on the loaded
  // 2-vCPU machine ran 20–30× slower (D=512 Q4_0: 23 tok/s against 735 passive), as PyTorch's do (perf.md)
  const env = { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' };
  const c0 = childrenCpuMs();
  const run = spawnSync(join(bin, 'llama-bench'), args, { encoding: 'utf8', env, timeout: 600_000 });
  const cpu = childrenCpuMs() - c0;
  if (run.status !== 0) throw new Error(`llama-bench ${args.join(' ')} exited ${run.status ?? run.signal}:\n${`${run.stdout}\n${run.stderr}`.split('\n').slice(-15).join('\n')}`);
  const recs = JSON.parse(run.stdout) as BenchRecord[];
  if (recs.length !== 1 || recs[0]!.samples_ns.length !== reps) throw new Error(`llama-bench ${args.join(' ')}: expected one record of ${reps} samples, got ${run.stdout.slice(0, 400)}`);
  return { rec: recs[0]!, cpu };
}

/**
 * llama.cpp at 1 thread: a probe run of 1 repetition and a run of 1 + k sized to `budgetMs` by
 * the probe; CPU per token = the difference of their CPU times / (k · tokens) (10 ms ticks: the
 * budget keeps that under ~1 %), wall = the median of the long run's repetitions.
 */
function llamaCppOneThread(bin: string, file: string, tokens: number, budgetMs: number): Timing & { rec: BenchRecord } {
  const probe = llamaBench(bin, file, tokens, 1, 50, 1);
  const k = Math.min(400, Math.max(2, Math.ceil(budgetMs / (probe.rec.samples_ns[0]! / 1e6))));
  const long = llamaBench(bin, file, tokens, 1, 50, 1 + k);
  return { wallMs: median(long.rec.samples_ns) / 1e6 / tokens, cpuMs: (long.cpu - probe.cpu) / (k * tokens), rec: long.rec };
}

/** test-backend-ops perf's MUL_MAT shape at this build: a weight of 4096 rows of 14336 inputs. */
const MATVEC_O = 4096;
const MATVEC_K = 14336;

/**
 * The ggml types llama.cpp times a matvec of (test-backend-ops perf lists no TQ types at this
 * build), each beside qgrad's nearest format: the same grid and block where one exists; NF4's
 * blocks of 64 against IQ4_NL's non-uniform 4-bit levels in blocks of 32.
 */
const MATVEC_PAIRS: { ggml: string; qgrad: string }[] = [
  { ggml: 'f32', qgrad: 'fp32' },
  { ggml: 'q8_0', qgrad: 'int8 g32' },
  { ggml: 'q4_0', qgrad: 'int4 g32' },
  { ggml: 'iq4_nl', qgrad: 'nf4 b64' },
];

/** Q8_0's grid and block in qgrad's packed form (the packed bench times int8 per channel). */
const INT8_G32: PackedFormat = { ...FORMATS.find((f) => f.name === 'int8 ch')!, name: 'int8 g32', group: 32 };

/**
 * llama.cpp's µs per MUL_MAT with one row of x, per ggml type asked for, from `test-backend-ops
 * perf -o MUL_MAT -b CPU` on one thread (OMP_THREAD_LIMIT=1): it repeats each product on one weight
 * for a second or more. It lists every type at n = 1 before any larger n, so the run is stopped once
 * the types asked for are in, or at the first n = 2 line.
 */
function llamaCppMatvec(bin: string, types: readonly string[]): Promise<Record<string, number>> {
  const exe = join(bin, 'test-backend-ops');
  const env = { ...process.env, OMP_THREAD_LIMIT: '1', OMP_WAIT_POLICY: 'PASSIVE' };
  const line = new RegExp(`MUL_MAT\\(type_a=(\\w+),type_b=f32,m=${MATVEC_O},n=(\\d+),k=${MATVEC_K},.*?([\\d.]+) us/run`);
  return new Promise((resolve, reject) => {
    const proc = spawn(exe, ['perf', '-o', 'MUL_MAT', '-b', 'CPU'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const found: Record<string, number> = {};
    let buf = '';
    let tail = '';
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      proc.kill();
      if (err) reject(err);
      else resolve(found);
    };
    const timer = setTimeout(() => finish(new Error(`${exe} perf: no MUL_MAT figures for ${types.filter((t) => !(t in found)).join(', ')} within 20 min`)), 1_200_000);
    proc.stdout.on('data', (d: Buffer) => {
      const text = d.toString();
      buf += text;
      tail = (tail + text).slice(-2000);
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const m = line.exec(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (!m) continue;
        if (m[2] !== '1') return finish();
        if (types.includes(m[1]!)) found[m[1]!] = Number(m[3]);
        if (types.every((t) => t in found)) return finish();
      }
    });
    proc.stderr.on('data', (d: Buffer) => (tail = (tail + d.toString()).slice(-2000)));
    proc.on('error', (e) => finish(e));
    proc.on('close', (code) => (types.every((t) => t in found) ? finish() : finish(new Error(`${exe} perf exited ${code} with figures for ${Object.keys(found).join(', ') || 'no type'} only:\n${tail}`))));
  });
}

/**
 * The child's side of the matvec table: median wall µs per call of qgrad's float32 `linear` and
 * of `packedLinear` on each paired format, one row of x, one weight called again and again (as
 * test-backend-ops repeats its product), after a warm-up; random valid codes (`keptWeight`).
 */
function timeMatvec(budgetMs: number): Record<string, number> {
  q.setBackend('wasm');
  const g = new q.Generator(1);
  const x = q.randn([1, MATVEC_K], { generator: g });
  const time = (fn: () => void): number => {
    for (let t0 = performance.now(); performance.now() - t0 < 300;) fn();
    const ts: number[] = [];
    for (let spent = 0; spent < budgetMs || ts.length < 5;) {
      const t = performance.now();
      fn();
      const dt = performance.now() - t;
      ts.push(dt * 1000);
      spent += dt;
    }
    return median(ts);
  };
  const out: Record<string, number> = {};
  for (const { qgrad: name } of MATVEC_PAIRS) {
    if (name === 'fp32') {
      const w = q.randn([MATVEC_O, MATVEC_K], { generator: g });
      out[name] = time(() => q.tidy(() => q.noGrad(() => void q.linear(x, w))));
      q.dispose([w]);
      continue;
    }
    const f = name === INT8_G32.name ? INT8_G32 : FORMATS.find((c) => c.name === name)!;
    const made: q.Tensor[] = [];
    const p = keptWeight(f, MATVEC_O, MATVEC_K, g, made);
    out[name] = time(() => q.tidy(() => q.noGrad(() => void q.packedLinear(x, p))));
    q.dispose(made);
  }
  return out;
}

/** A child process of this file in `mode` with QGRAD_THREADS = `threads` (and the workers' spin, where given); its last stdout line, parsed. */
function child<T>(mode: string[], threads: number, spinMicros?: number): T {
  const env: NodeJS.ProcessEnv = { ...process.env, QGRAD_THREADS: `${threads}` };
  if (spinMicros !== undefined) env.QGRAD_SPIN_US = `${spinMicros}`;
  else delete env.QGRAD_SPIN_US;
  const args = [...process.execArgv, fileURLToPath(import.meta.url), ...mode];
  const run = spawnSync(process.execPath, args, { encoding: 'utf8', env, timeout: 1_200_000, maxBuffer: 1 << 24 });
  const last = run.stdout?.trim().split('\n').pop() ?? '';
  if (run.status !== 0 || !last.startsWith('{')) throw new Error(`llamacpp bench: qgrad's child (${mode.join(' ')}, QGRAD_THREADS=${threads}) exited ${run.status ?? run.signal}:\n${`${run.stdout}\n${run.stderr}`.split('\n').slice(-15).join('\n')}`);
  return JSON.parse(last) as T;
}

/** qgrad's generate() timings in a child process with QGRAD_THREADS = `threads` (and the workers' spin, where given). */
function qgradChild(threads: number, tokens: number, budgetMs: number, spinMicros?: number): Record<string, Timing> {
  return child<Record<string, Timing>>(['--generate', `${tokens}`, `${budgetMs}`], threads, spinMicros);
}

/** The matvec table: llama.cpp's own MUL_MAT figures beside qgrad's on the same shape, 1 thread; null (and one line) without test-backend-ops. */
async function matvecTable(ctx: BenchContext, bin: string, budgetMs: number): Promise<Record<string, Record<string, number | null>> | null> {
  if (!existsSync(join(bin, 'test-backend-ops'))) {
    console.log(`llamacpp matvec: SKIPPED, no llama.cpp matvec figures (${join(bin, 'test-backend-ops')} does not exist)`);
    return null;
  }
  const theirs = await llamaCppMatvec(bin, MATVEC_PAIRS.map((p) => p.ggml));
  const ours = child<Record<string, number>>(['--matvec', `${budgetMs}`], 1);
  const [fpTheirs, fpOurs] = [theirs.f32, ours.fp32!];
  const out: Record<string, Record<string, number | null>> = {};
  const rows = MATVEC_PAIRS.map(({ ggml, qgrad }) => {
    const [t, o] = [theirs[ggml] ?? null, ours[qgrad]!];
    out[`${ggml} / ${qgrad}`] = { 'llama.cpp µs': t, 'qgrad µs': o };
    return [ggml, qgrad, t ?? '—', o, t === null ? '—' : t / o, t === null || fpTheirs === undefined ? '—' : fpTheirs / t, fpOurs / o];
  });
  ctx.table(
    `matvec, one row of x, ${MATVEC_O} × ${MATVEC_K} (test-backend-ops perf's MUL_MAT shape), 1 thread, one weight called again and again: llama.cpp's own figure (test-backend-ops perf, µs/run) beside qgrad's (median wall µs per call); × = llama.cpp / qgrad (> 1 is qgrad faster); each side's float32 time / its time`,
    ['ggml type', 'qgrad format', 'llama.cpp µs', 'qgrad µs', '×', 'llama.cpp × own f32', 'qgrad × own fp32'],
    rows,
  );
  return out;
}

export async function run(ctx: BenchContext): Promise<Record<string, unknown>> {
  const bin = process.env.LLAMA_CPP_BIN;
  if (!bin || !existsSync(join(bin, 'llama-bench'))) {
    const why = bin ? `${join(bin, 'llama-bench')} does not exist` : 'LLAMA_CPP_BIN is not set to a directory holding llama-bench';
    console.log(`\nllamacpp: SKIPPED, no llama.cpp figures (${why})`);
    return { skipped: why };
  }
  const tokens = ctx.quick ? 16 : 64;
  const budgetMs = ctx.quick ? 300 : 1000;
  const rounds = ctx.quick ? 1 : 3;
  const load0 = loadavg()[0]!;
  const dir = mkdtempSync(join(tmpdir(), 'qgrad-bench-llamacpp-'));
  try {
    const files: Record<string, string> = {};
    const exports: Record<string, { bytes: number; fromCodes: string }> = {};
    for (const m of MODELS) {
      for (const f of m.formats) {
        files[key(m, f)] = join(dir, `${key(m, f).replace(/[^\w]+/g, '_')}.gguf`);
        const r = Q.exportGguf(build(m, f), files[key(m, f)]!, { type: f });
        const matrices = r.tensors.filter((t) => t.name.endsWith('.weight') && !t.name.includes('norm'));
        const fromCodes = matrices.filter((t) => t.source === 'codes' && t.type === f).length;
        exports[key(m, f)] = { bytes: r.bytes.length, fromCodes: f === 'F32' ? 'float' : `${fromCodes}/${matrices.length}` };
      }
    }
    const keys = Object.keys(files);
    // per round and key: qgrad 1t, qgrad 2t (better spin), llama.cpp 1t, llama.cpp 2t (better poll)
    const q1: Record<string, Timing>[] = [], q2: Record<string, Timing>[] = [], l1: Record<string, Timing>[] = [], l2: Record<string, number>[] = [];
    const settings: Record<string, string>[] = [];
    let rec: BenchRecord | undefined;
    for (let r = 0; r < rounds; r++) {
      // the contenders take turns, thread count by thread count, so the machine's load hits both
      q1.push(qgradChild(1, tokens, budgetMs));
      l1.push(Object.fromEntries(keys.map((k) => {
        const t = llamaCppOneThread(bin, files[k]!, tokens, budgetMs);
        rec = t.rec;
        return [k, { wallMs: t.wallMs, cpuMs: t.cpuMs }];
      })));
      // both sides' idle threads poll before they sleep; on a loaded 2-core machine polling can cost more than it saves
      const spin = [qgradChild(2, tokens, budgetMs), qgradChild(2, tokens, budgetMs, 0)];
      const reps = Math.max(3, Math.round(budgetMs / 300));
      const polls = keys.map((k) => [50, 0].map((p) => median(llamaBench(bin, files[k]!, tokens, 2, p, reps).rec.samples_ns) / 1e6 / tokens));
      q2.push(Object.fromEntries(keys.map((k) => [k, spin[0]![k]!.wallMs <= spin[1]![k]!.wallMs ? spin[0]![k]! : spin[1]![k]!])));
      l2.push(Object.fromEntries(keys.map((k, i) => [k, Math.min(...polls[i]!)])));
      settings.push(Object.fromEntries(keys.flatMap((k, i) => [
        [`qgrad ${k}`, spin[0]![k]!.wallMs <= spin[1]![k]!.wallMs ? 'QGRAD_SPIN_US default' : 'QGRAD_SPIN_US=0'],
        [`llama.cpp ${k}`, polls[i]![0]! <= polls[i]![1]! ? '--poll 50' : '--poll 0'],
      ])));
    }
    const med = (xs: number[]) => ctx.median(xs);
    const results: Record<string, Record<string, number>> = {};
    const rows1: (string | number)[][] = [];
    const rows2: (string | number)[][] = [];
    for (const k of keys) {
      const r = {
        'qgrad 1t CPU ms/token': med(q1.map((x) => x[k]!.cpuMs)),
        'qgrad 1t wall ms/token': med(q1.map((x) => x[k]!.wallMs)),
        'llama.cpp 1t CPU ms/token': med(l1.map((x) => x[k]!.cpuMs)),
        'llama.cpp 1t wall ms/token': med(l1.map((x) => x[k]!.wallMs)),
        'qgrad 2t wall ms/token': med(q2.map((x) => x[k]!.wallMs)),
        'llama.cpp 2t wall ms/token': med(l2.map((x) => x[k]!)),
      };
      results[k] = { ...r, 'GGUF bytes': exports[k]!.bytes };
      const tps = (ms: number) => 1000 / ms;
      rows1.push([k, exports[k]!.fromCodes, tps(r['qgrad 1t CPU ms/token']), tps(r['llama.cpp 1t CPU ms/token']), r['llama.cpp 1t CPU ms/token'] / r['qgrad 1t CPU ms/token'], tps(r['qgrad 1t wall ms/token']), tps(r['llama.cpp 1t wall ms/token'])]);
      rows2.push([k, tps(r['qgrad 2t wall ms/token']), tps(r['llama.cpp 2t wall ms/token']), r['llama.cpp 2t wall ms/token'] / r['qgrad 2t wall ms/token']]);
    }
    const load1 = loadavg()[0]!;
    const won = (what: string) => settings.reduce((n, st) => n + Object.values(st).filter((v) => v === what).length, 0);
    ctx.table(
      `token generation, 1 thread, ${tokens} one-token decodes from an empty KV cache: qgrad generate() vs llama.cpp llama-bench tg${tokens} on the same weights (tokens/s of process CPU time, medians of ${rounds} rounds; × = qgrad / llama.cpp, > 1 is qgrad faster; matrices from codes = GGUF matrices holding qgrad's QAT codes at the type)`,
      ['model format', 'matrices from codes', 'qgrad tok/s', 'llama.cpp tok/s', '×', 'qgrad wall tok/s', 'llama.cpp wall tok/s'],
      rows1,
    );
    ctx.table(
      `the same at 2 threads (tokens/s of wall time, medians of ${rounds} rounds, each side at its better idle-wait setting that round; × as above)`,
      ['model format', 'qgrad tok/s', 'llama.cpp tok/s', '×'],
      rows2,
    );
    console.log(`2-thread settings kept, of ${rounds * keys.length} per side: QGRAD_SPIN_US=0 ${won('QGRAD_SPIN_US=0')}, llama.cpp --poll 0 ${won('--poll 0')}`);
    console.log(`llama.cpp: ${rec?.cpu_info ?? '?'}, build ${rec?.build_commit ?? '?'}; 1-minute load average ${load0.toFixed(1)} before, ${load1.toFixed(1)} after (wall figures on a loaded machine are inflated, 2-thread ones most)`);
    const matvec = await matvecTable(ctx, bin, budgetMs);
    return { tokens, rounds, llamaCpp: { bin, buildCommit: rec?.build_commit, cpuInfo: rec?.cpu_info }, loadAverage: [load0, load1], exports, results, settings, matvec };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// the child processes `child` starts: time generate() or the matvecs at this process's thread count, print JSON
if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === '--generate') {
  console.log(JSON.stringify(timeGenerate(Number(process.argv[3]), Number(process.argv[4]))));
}
if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === '--matvec') {
  console.log(JSON.stringify(timeMatvec(Number(process.argv[3]))));
}
