//! Opt-in timing of the engine's phases: with `VERDICT_PROFILE=1`, each timed region waits
//! for the device before and after, and its wall time is added to a table that
//! `report()` prints. The waits serialize host and device, so a profiled run is slower than a
//! plain one: use it to see where time goes, never for throughput figures.

use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use candle_core::Device;

static ENABLED: LazyLock<bool> = LazyLock::new(|| std::env::var_os("VERDICT_PROFILE").is_some_and(|v| v != "0"));
/// (phase, region) → (seconds, calls).
type Totals = Vec<((&'static str, &'static str), (f64, u64))>;
static TOTALS: Mutex<Totals> = Mutex::new(Vec::new());

pub fn enabled() -> bool {
    *ENABLED
}

thread_local! {
    /// Regions inside this are not timed: a CUDA graph's capture may not wait for the device.
    static SUSPENDED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// While the guard lives, `time` only runs its function (a CUDA graph is being captured).
pub struct Suspended(());

pub fn suspend() -> Suspended {
    SUSPENDED.with(|s| s.set(s.get() + 1));
    Suspended(())
}

impl Drop for Suspended {
    fn drop(&mut self) {
        SUSPENDED.with(|s| s.set(s.get() - 1));
    }
}

/// Run `f`, timing it under (phase, region) when profiling is on.
pub fn time<T>(phase: &'static str, region: &'static str, device: &Device, f: impl FnOnce() -> T) -> T {
    if !enabled() || SUSPENDED.with(|s| s.get() > 0) {
        return f();
    }
    let _ = device.synchronize();
    let started = Instant::now();
    let out = f();
    let _ = device.synchronize();
    let secs = started.elapsed().as_secs_f64();
    if let Ok(mut totals) = TOTALS.lock() {
        match totals.iter_mut().find(|(k, _)| *k == (phase, region)) {
            Some((_, (s, n))) => {
                *s += secs;
                *n += 1;
            }
            None => totals.push(((phase, region), (secs, 1))),
        }
    }
    out
}

/// The table so far, one line per region (total seconds, calls, milliseconds per call), and
/// reset it.
pub fn report() -> String {
    let Ok(mut totals) = TOTALS.lock() else { return String::new() };
    let mut lines: Vec<String> = totals
        .iter()
        .map(|((phase, region), (s, n))| format!("{phase:>8} {region:<12} {s:>9.3} s {n:>8} calls {:>9.3} ms/call", 1e3 * s / *n as f64))
        .collect();
    lines.sort();
    totals.clear();
    lines.join("\n")
}
