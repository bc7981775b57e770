/** @file Bit-switching: Double Rounding (one stored h-bit model, lower widths by re-rounding its codes) with ALRS. */
export * from './double-rounding.js';
