/**
 * @file The public training API: `fit` / `Trainer` with callbacks (progress bar, JSON-lines
 * metrics, atomic checkpoints with exact resume, early stopping, SVG plots) and
 * `savePretrained` / `fromPretrained` for the zoo models in the Hugging Face layout.
 */
export { fit, type FitOptions, type RunResult } from './fit.js';
export {
  Trainer, NonFiniteLossError, nonFiniteGuard, stepGenerator, epochBatch, SEED_MAX,
  type Callback, type RunContext, type StepContext, type TrainerOptions, type FitResult,
} from './trainer.js';
export { JsonlMetrics, Checkpointer, EarlyStopping, type EarlyStoppingOptions } from './callbacks.js';
export { ProgressBar, type ProgressBarOptions } from './progress.js';
export { PlotCurves, plotCurves, curvesSpec, renderSvg, type VegaLiteSpec } from './plot.js';
export { MetricsWriter, readMetrics, encodeRecord, writeFileAtomic, type MetricsRecord } from './metrics.js';
export { saveCheckpoint, loadCheckpoint, checkpointContents, type TrainingState, type CheckpointInfo } from './checkpoint.js';
export { savePretrained, fromPretrained, vitConfigToHf, vitConfigFromHf, type PretrainedModel } from './pretrained.js';
