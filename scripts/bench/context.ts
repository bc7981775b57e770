/**
 * @file What run.ts hands each bench section: the quick flag, PyTorch's side of the section, the
 * table printer and the median.
 */
export interface BenchContext {
  quick: boolean;
  /** Runs scripts/bench/torch_bench.py <section> …; null when PyTorch is not importable. */
  torch: (section: string, ...rest: string[]) => Record<string, number> | null;
  table: (title: string, header: string[], rows: (string | number)[][]) => void;
  median: (xs: number[]) => number;
}
