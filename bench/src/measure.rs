//! A small timing harness: warm up, size a batch to ~10 ms, take many batch samples, report the
//! median per operation. Medians resist the noise of a shared 2-core machine better than means.

use anyhow::Result;
use std::time::{Duration, Instant};

/// Per-operation timings of one measurement.
#[derive(Debug, Clone)]
pub struct Sample {
    per_op_ns: Vec<f64>,
}

impl Sample {
    fn median_ns(&self) -> f64 {
        let mut v = self.per_op_ns.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
    /// Median, microseconds.
    pub fn median_us(&self) -> f64 {
        self.median_ns() / 1e3
    }
    /// Median, milliseconds.
    pub fn median_ms(&self) -> f64 {
        self.median_ns() / 1e6
    }
}

const SAMPLES: usize = 25;
const TARGET_BATCH: Duration = Duration::from_millis(10);

/// Measures a fast operation: batches sized to ~10 ms, 25 samples.
pub fn measure<'a>(op: impl FnMut() -> Result<()> + 'a) -> Result<Sample> {
    let mut ops: [Op<'a>; 1] = [Box::new(op)];
    Ok(measure_interleaved(&mut ops)?.remove(0))
}

/// An operation to time: one call is one request.
pub type Op<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// Measures several fast operations the way [`measure`] does, with their batches interleaved
/// (one batch of each per round, 25 rounds), so that a machine slowing down or speeding up
/// during the run (a shared VM does, for seconds at a time) affects every figure and its
/// baselines alike, and a slow spell shorter than half the run does not move the medians.
pub fn measure_interleaved(ops: &mut [Op<'_>]) -> Result<Vec<Sample>> {
    let mut batches = Vec::with_capacity(ops.len());
    for op in ops.iter_mut() {
        let warm_until = Instant::now() + Duration::from_millis(100);
        let mut calls = 0u64;
        while Instant::now() < warm_until || calls < 3 {
            op()?;
            calls += 1;
        }
        let start = Instant::now();
        op()?;
        let one = start.elapsed().max(Duration::from_nanos(50));
        batches.push(((TARGET_BATCH.as_nanos() / one.as_nanos()).max(1) as usize).min(1_000_000));
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(SAMPLES); ops.len()];
    for _ in 0..SAMPLES {
        for ((op, &batch), per_op_ns) in ops.iter_mut().zip(&batches).zip(samples.iter_mut()) {
            let start = Instant::now();
            for _ in 0..batch {
                op()?;
            }
            per_op_ns.push(start.elapsed().as_nanos() as f64 / batch as f64);
        }
    }
    Ok(samples.into_iter().map(|per_op_ns| Sample { per_op_ns }).collect())
}

/// Measures a slow operation `n` times, one sample each.
pub fn time_each(n: usize, mut op: impl FnMut() -> Result<()>) -> Result<Sample> {
    let mut per_op_ns = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        op()?;
        per_op_ns.push(start.elapsed().as_nanos() as f64);
    }
    Ok(Sample { per_op_ns })
}
